"""How an annotated instance is shown to a model: its deployment ROI, or a square box crop.

Two protocols (``accuracy.crop``). ``roi`` (the default) derives the region of interest from the
ground-truth keypoints exactly as the model's pipeline derives it from the previous frame's
landmarks when tracking (the registry's ``roi`` convention, :mod:`pipeline.roi`): rotated so the
pipeline's keypoint axis points up, enlarged and squared as its graph does, then warped and
mapped back with :mod:`pipeline.roi.warp`. ``box`` is the upright crop described below, kept for
comparison and for models without an ROI convention.

Single-person, face and hand models are evaluated top-down (as their pipelines run them after a
detector): the ground-truth box, enlarged by the registry's ``accuracy.box_scale`` and made
square around its centre, is cut out (black outside the image) and resized to the input size with
the same code the calibration crops use (:func:`pipeline.calibration.images.crop_and_resize`, an
antialiased resize: a plain affine warp would alias when a 500 px face becomes 192 px). The crop
corners are whole pixels, so the map back is exact. A whole image for a multi-person
model is the same operation with the image's own box and factor 1: the square around the image
centre with side max(w, h) *is* a letterbox (black outside the image).

Coordinates are continuous (pixel edges at integers, pixel centres at +0.5), as PIL resizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from pipeline.calibration.images import crop_and_resize
from pipeline.registry import InputSpec
from pipeline.roi.conventions import RoiSpec
from pipeline.roi.geometry import Roi, RoiRule, roi_from_points
from pipeline.roi.warp import to_image, warp


@dataclass(frozen=True)
class Crop:
    """A square region of the image: top-left corner and side, in image pixels."""

    x0: int
    y0: int
    side: int

    def to_image(self, xy: np.ndarray, spec: InputSpec) -> np.ndarray:
        """Map (…, 2) input-pixel coordinates back to image pixels."""
        scale = np.array([self.side / spec.width, self.side / spec.height])
        return np.asarray(xy, dtype=np.float64) * scale + np.array([self.x0, self.y0])


def square_crop(bbox: Sequence[float], factor: float) -> Crop:
    """The square of side ``factor`` · max(w, h) centred on the box (x, y, w, h), in whole pixels."""
    x, y, w, h = (float(v) for v in bbox)
    side = max(1, round(max(w, h) * factor))
    return Crop(round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), side)


def whole_image(width: int, height: int) -> Crop:
    """The letterbox square of a whole image (multi-person models)."""
    return square_crop((0.0, 0.0, float(width), float(height)), 1.0)


def crop_pixels(img: Image.Image, crop: Crop, spec: InputSpec) -> np.ndarray:
    """uint8 RGB (H, W, 3) input pixels of ``crop`` (black outside the image)."""
    return crop_and_resize(img, (crop.x0, crop.y0, crop.x0 + crop.side, crop.y0 + crop.side), spec)


PROTOCOLS = ("roi", "box")


def truth_roi(keypoints: np.ndarray, table: Mapping[int, int], keypoint_count: int, rule: RoiRule) -> tuple[Roi, bool] | None:
    """The ROI tracking would derive from an instance's ground truth (dataset keypoints (P, 3)).

    ``table`` maps dataset keypoints onto model keypoints, so the rule's keypoint indices (model
    indices, as in MediaPipe's graphs) find their ground-truth counterparts; the box extent uses
    every labelled ground-truth point unless the rule names its own subset. Returns the ROI and
    whether it is rotated (False: a rotation keypoint is unlabelled, so the ROI is upright), or
    None when too few points are labelled.
    """
    model_points = np.full((keypoint_count, 2), np.nan)
    labelled = np.zeros(keypoint_count, dtype=bool)
    for d, m in table.items():
        model_points[m] = keypoints[d, :2]
        labelled[m] = keypoints[d, 2] > 0
    return roi_from_points(model_points, labelled, rule, keypoints[keypoints[:, 2] > 0, :2])


@dataclass(frozen=True)
class Framing:
    """How one instance was shown to the model: input pixels and the map back to the image."""

    pixels: np.ndarray
    to_image: Callable[[np.ndarray], np.ndarray]
    protocol: str  # "roi", "roi-upright" (a rotation keypoint unlabelled) or "box"


def frame_instance(img: Image.Image, bbox: Sequence[float], keypoints: np.ndarray, spec: InputSpec, box_scale: float,
                   table: Mapping[int, int] | None, keypoint_count: int, roi: RoiSpec | None) -> Framing:
    """The instance's ROI (protocol ``roi``: ``roi`` and ``table`` given) or its upright box crop.

    An instance whose ROI cannot be derived (fewer than two labelled points the rule needs)
    falls back to the box crop, and says so in ``protocol``.
    """
    found = truth_roi(keypoints, table, keypoint_count, roi.truth_rule) if roi is not None and roi.truth_rule and table is not None else None
    if found is not None:
        rect, rotated = found
        return Framing(warp(img, rect, spec, roi.border), lambda xy: to_image(xy, rect, spec), "roi" if rotated else "roi-upright")  # type: ignore[union-attr]
    crop = square_crop(bbox, box_scale)
    return Framing(crop_pixels(img, crop, spec), lambda xy: crop.to_image(xy, spec), "box")
