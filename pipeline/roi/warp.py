"""One affine warp from an ROI to a model input, and its exact inverse for keypoints.

MediaPipe's ImageToTensorCalculator maps the rotated ROI onto the input tensor with a bilinear
affine warp; this is the same map. Two details it glosses over are made explicit:

- **Antialiasing.** A 600 px face warped straight to 192 px aliases (bilinear reads 4 of ~9
  source pixels per output pixel). When the ROI is more than twice the input size the image is
  first box-reduced by the integer factor ``f = floor(scale)`` (``PIL.Image.reduce``, exact
  averages) and the warp reads the reduced image, whose continuous coordinates are the
  original's divided by ``f``: the map stays exact.
- **Outside the image** the ROI is padded as the model's graph pads: ``zero`` (BORDER_ZERO,
  black) or ``replicate`` (BORDER_REPLICATE, edge pixels), from the registry's ``roi.border``.

Coordinates are continuous (pixel edges at integers), the convention PIL's transform and
resize use, so the inverse map of a keypoint needs no half-pixel terms. ``letterbox`` inputs
(a non-square input, or a whole-image ROI) take the ROI enlarged to the input's aspect ratio,
as ImageToTensorCalculator's ``keep_aspect_ratio`` does.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from pipeline.registry import InputSpec
from pipeline.roi.geometry import Roi

BORDERS = ("zero", "replicate")


def fitted(roi: Roi, spec: InputSpec) -> Roi:
    """The ROI the input really shows: enlarged to the input's aspect ratio for ``letterbox`` inputs."""
    if spec.resize != "letterbox":
        return roi
    aspect = spec.width / spec.height
    width, height = max(roi.width, roi.height * aspect), max(roi.height, roi.width / aspect)
    return Roi(roi.cx, roi.cy, width, height, roi.rotation)


def to_image(xy: np.ndarray, roi: Roi, spec: InputSpec) -> np.ndarray:
    """(…, 2) input-pixel coordinates → image pixels (the inverse map keypoints go through)."""
    roi = fitted(roi, spec)
    xy = np.asarray(xy, dtype=np.float64)
    local = np.stack([(xy[..., 0] / spec.width - 0.5) * roi.width, (xy[..., 1] / spec.height - 0.5) * roi.height], axis=-1)
    return roi.local_to_image(local)


def to_input(xy: np.ndarray, roi: Roi, spec: InputSpec) -> np.ndarray:
    """(…, 2) image pixels → input-pixel coordinates (the forward map of :func:`warp`)."""
    roi = fitted(roi, spec)
    local = roi.image_to_local(xy)
    return np.stack([(local[..., 0] / roi.width + 0.5) * spec.width, (local[..., 1] / roi.height + 0.5) * spec.height], axis=-1)


def warp(img: Image.Image, roi: Roi, spec: InputSpec, border: str = "zero") -> np.ndarray:
    """uint8 RGB (H, W, 3) input pixels showing ``roi`` of ``img`` (see the module docstring)."""
    if border not in BORDERS:
        raise ValueError(f"border {border!r} is not one of {BORDERS}")
    roi = fitted(roi, spec)
    factor = max(1, int(math.floor(min(roi.width / spec.width, roi.height / spec.height))))
    if factor > 1:
        img = img.reduce(factor)
    # Read only the part of the (reduced) image the ROI covers, padded as the graph pads.
    corners = roi.corners() / factor
    x0, y0 = (int(math.floor(v)) - 2 for v in corners.min(axis=0))
    x1, y1 = (int(math.ceil(v)) + 2 for v in corners.max(axis=0))
    pixels = np.asarray(img, dtype=np.uint8)
    height, width = pixels.shape[:2]
    window = pixels[max(0, y0) : max(0, min(height, y1)), max(0, x0) : max(0, min(width, x1))]
    pad = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
    if window.size == 0:  # the ROI lies wholly outside the image
        window = np.zeros((1, 1, 3), dtype=np.uint8)
        pad = ((0, y1 - y0 - 1), (0, x1 - x0 - 1), (0, 0))
        border = "zero"
    window = np.pad(window, pad, mode="edge" if border == "replicate" else "constant")
    # Output (u, v) → source: image = centre + R · local, local = (u / W − ½) · w, (v / H − ½) · h.
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    a, b = c * roi.width / spec.width / factor, -s * roi.height / spec.height / factor
    d, e = s * roi.width / spec.width / factor, c * roi.height / spec.height / factor
    origin = roi.local_to_image(np.array([-roi.width / 2, -roi.height / 2])) / factor - [x0, y0]
    out = Image.fromarray(window).transform(
        (spec.width, spec.height), Image.AFFINE, (a, b, float(origin[0]), d, e, float(origin[1])), resample=Image.BILINEAR
    )
    return np.asarray(out, dtype=np.uint8)
