"""Square crops around a box, resized to the model input, and the inverse map back to the image.

Single-person, face and hand models are evaluated top-down (as their pipelines run them after a
detector): the ground-truth box, enlarged by the registry's ``accuracy.crop_factor`` and made
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
from typing import Sequence

import numpy as np
from PIL import Image

from pipeline.calibration.images import crop_and_resize
from pipeline.registry import InputSpec


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
