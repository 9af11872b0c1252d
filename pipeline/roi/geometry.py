"""Region-of-interest geometry: MediaPipe's rect conventions, as data.

MediaPipe's landmark models never see an upright box crop: their graphs turn a detection (or,
when tracking, the previous frame's landmarks) into a *rotated* rectangle — rotation chosen so a
fixed keypoint axis points a fixed way, centre and size from a box of keypoints, then shifted,
squared and enlarged — and warp that rectangle onto the input tensor. The calculators that do it
(``DetectionsToRectsCalculator``, ``AlignmentPointsRectsCalculator``,
``HandLandmarksToRectCalculator``, ``RectTransformationCalculator``) are C++ inside mediapipe,
which posezoo may not import, so their few lines of arithmetic are restated here, driven by a
:class:`RoiRule` read from the registry's ``roi:`` block (which cites the option values it
copies). Every stage that feeds a model a subject — calibration, validation, held-out drift and
ground truth — computes its ROI here.

Conventions (MediaPipe's, in image pixels with y down): a rect is centre, width, height and a
rotation in radians; a point (u, v) of the rect's own frame (centred, unrotated) lies at
``centre + R(rotation) · (u, v)`` with ``R = [[cos, −sin], [sin, cos]]`` — a positive rotation
turns the rect clockwise on screen. ``rotation = target − atan2(−(y1 − y0), x1 − x0)`` for the
rotation vector from keypoint ``start`` to ``end``, so that vector points ``target`` (90° = up)
inside the crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from pipeline.errors import PosezooError

BOXES = ("rotated", "axis_aligned", "alignment", "enclosing", "torso_body")


@dataclass(frozen=True)
class Roi:
    """A rotated rectangle of the image, in pixels (see the module docstring for the convention)."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float = 0.0

    def as_list(self) -> list[float]:
        """[cx, cy, width, height, rotation] rounded for manifests (6 decimals: far below a pixel)."""
        return [round(float(v), 6) for v in (self.cx, self.cy, self.width, self.height, self.rotation)]

    @classmethod
    def from_list(cls, values: Any) -> "Roi":
        cx, cy, w, h, r = (float(v) for v in values)
        return cls(cx, cy, w, h, r)

    def corners(self) -> np.ndarray:
        """(4, 2) image coordinates of the corners (top-left, top-right, bottom-right, bottom-left of the crop)."""
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * [self.width / 2, self.height / 2]
        return self.local_to_image(local)

    def local_to_image(self, local: np.ndarray) -> np.ndarray:
        """(…, 2) points of the rect's centred frame → image pixels."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        local = np.asarray(local, dtype=np.float64)
        x = self.cx + c * local[..., 0] - s * local[..., 1]
        y = self.cy + s * local[..., 0] + c * local[..., 1]
        return np.stack([x, y], axis=-1)

    def image_to_local(self, xy: np.ndarray) -> np.ndarray:
        """(…, 2) image pixels → the rect's centred frame (inverse of :meth:`local_to_image`)."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        xy = np.asarray(xy, dtype=np.float64)
        dx, dy = xy[..., 0] - self.cx, xy[..., 1] - self.cy
        return np.stack([c * dx + s * dy, -s * dx + c * dy], axis=-1)


def _weights(spec: Any, where: str) -> dict[int, float]:
    """A keypoint reference: an index, a list (mean of those), or {index: weight} (weights sum to 1)."""
    if isinstance(spec, int):
        return {spec: 1.0}
    if isinstance(spec, list) and spec:
        return {int(i): 1.0 / len(spec) for i in spec}
    if isinstance(spec, Mapping) and spec:
        table = {int(i): float(w) for i, w in spec.items()}
        if abs(sum(table.values()) - 1.0) > 1e-6:
            raise PosezooError(f"{where}: keypoint weights {table} do not sum to 1; fix the roi block")
        return table
    raise PosezooError(f"{where}: {spec!r} is not a keypoint index, list or {{index: weight}}; fix the roi block")


@dataclass(frozen=True)
class RoiRule:
    """One ``roi.from_landmarks`` / ``roi.from_detection`` / ``roi.ground_truth`` block.

    - ``box``: ``rotated`` (bounding box of ``points`` in the rotated frame, as
      HandLandmarksToRectCalculator), ``axis_aligned`` (their upright bounding box, as
      DetectionsToRectsCalculator), ``alignment`` (centre = ``start``, side = 2·|end − start|, as
      AlignmentPointsRectsCalculator) or ``enclosing`` (centre = ``start``, side = 2 × the
      distance to the farthest of ``points``: the whole-body circle of BlazePose's detector,
      restated for keypoints that lack its auxiliary point) or ``torso_body`` (MoveNet's tutorial
      crop: centre = ``start``, half side = max(``factors[0]`` × the torso ``points``' largest
      x / y distance from it, ``factors[1]`` × every labelled point's)).
    - ``start`` / ``end``: keypoint references of the rotation vector; ``target_degrees``.
    - ``scale``, ``shift`` (fractions of the rect, in its rotated frame) and ``square_long``:
      RectTransformationCalculator's options, applied shift → square → scale as it does.
    """

    box: str
    start: Mapping[int, float]
    end: Mapping[int, float]
    target_degrees: float
    points: tuple[int, ...] | None
    scale: tuple[float, float]
    shift: tuple[float, float]
    square_long: bool
    rotate: bool = True
    factors: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def parse(cls, block: Mapping[str, Any], where: str) -> "RoiRule":
        box = block.get("box")
        if box not in BOXES:
            raise PosezooError(f"{where}: box is {box!r}; use one of {', '.join(BOXES)}")
        scale = block.get("scale", [1.0, 1.0])
        shift = block.get("shift", [0.0, 0.0])
        points = block.get("points")
        return cls(
            box=box,
            start=_weights(block.get("start"), f"{where}.start"),
            end=_weights(block.get("end"), f"{where}.end"),
            target_degrees=float(block.get("target_degrees", 90.0)),
            points=tuple(int(p) for p in points) if points is not None else None,
            scale=(float(scale[0]), float(scale[1])),
            shift=(float(shift[0]), float(shift[1])),
            square_long=bool(block.get("square_long", True)),
            rotate=bool(block.get("rotate", True)),
            factors=tuple(float(f) for f in block.get("factors", [1.0, 1.0])),  # type: ignore[arg-type]
        )

    def needed(self) -> set[int]:
        """Keypoints the rotation vector needs (all must be labelled for a rotated ROI)."""
        return set(self.start) | set(self.end)


def _point(points: np.ndarray, ref: Mapping[int, float]) -> np.ndarray:
    return sum(points[i] * w for i, w in ref.items())  # type: ignore[return-value]


def rotation_of(start: np.ndarray, end: np.ndarray, target_degrees: float) -> float:
    """MediaPipe's ``NormalizeRadians(target − atan2(−(y1 − y0), x1 − x0))``, in (−π, π]."""
    angle = math.radians(target_degrees) - math.atan2(-(end[1] - start[1]), end[0] - start[0])
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def transform(rect: Roi, rule: RoiRule) -> Roi:
    """RectTransformationCalculator: shift in the rect's rotated frame, square the long side, scale."""
    w, h, r = rect.width, rect.height, rect.rotation
    sx, sy = rule.shift
    cx = rect.cx + w * sx * math.cos(r) - h * sy * math.sin(r)
    cy = rect.cy + w * sx * math.sin(r) + h * sy * math.cos(r)
    if rule.square_long:
        w = h = max(w, h)
    return Roi(cx, cy, w * rule.scale[0], h * rule.scale[1], r)


def roi_from_points(points: np.ndarray, labelled: np.ndarray, rule: RoiRule, box_points: np.ndarray | None = None) -> tuple[Roi, bool] | None:
    """The ROI a rule makes from keypoints (K, 2) with a labelled mask (K,), and whether it is rotated.

    ``points`` are indexed like the model's keypoints. ``box_points`` (M, 2), when given, replace
    them for the extent of an ``axis_aligned`` / ``rotated`` / ``enclosing`` / ``torso_body`` box
    of a rule without its own ``points`` subset: every labelled ground-truth point of a dataset,
    of which only some map onto model keypoints. Only labelled points count. When a point of the rotation vector is unlabelled the ROI is
    upright (rotation 0) and ``False`` says so; when fewer than two box points are labelled (or
    the alignment centre is missing) there is no ROI: ``None``.
    """
    points = np.asarray(points, dtype=np.float64)
    labelled = np.asarray(labelled, dtype=bool) & np.isfinite(points).all(axis=1)
    can_rotate = rule.rotate and all(i < len(points) and labelled[i] for i in rule.needed())
    rotation = rotation_of(_point(points, rule.start), _point(points, rule.end), rule.target_degrees) if can_rotate else 0.0
    subset = np.array([i for i in (rule.points if rule.points is not None else range(len(points))) if i < len(points) and labelled[i]], dtype=int)
    if rule.box in ("alignment", "enclosing", "torso_body"):
        if not all(i < len(points) and labelled[i] for i in rule.start):
            return None
        centre = _point(points, rule.start)
        if rule.box == "torso_body":
            body = points[labelled] if box_points is None else box_points
            torso = points[subset] if len(subset) else centre[None]
            half = max(rule.factors[0] * float(np.abs(torso - centre).max()), rule.factors[1] * float(np.abs(body - centre).max()))
            return (transform(Roi(float(centre[0]), float(centre[1]), 2 * half, 2 * half, 0.0), rule), False) if half > 0 else None
        if rule.box == "alignment":
            if not all(i < len(points) and labelled[i] for i in rule.end):
                return None
            radius = float(np.linalg.norm(_point(points, rule.end) - centre))
        else:
            pool = points[subset] if box_points is None else box_points
            if len(pool) < 2:
                return None
            radius = float(np.linalg.norm(pool - centre, axis=1).max())
        if radius <= 0:
            return None
        return transform(Roi(float(centre[0]), float(centre[1]), 2 * radius, 2 * radius, rotation), rule), can_rotate
    pts = box_points if box_points is not None and rule.points is None else points[subset]
    if len(pts) < 2:
        return None
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if rule.box == "axis_aligned":
        centre, size = (lo + hi) / 2, hi - lo
    else:  # rotated: the box of the points in the frame turned by -rotation about their axis-aligned centre
        mid = (lo + hi) / 2
        frame = Roi(float(mid[0]), float(mid[1]), 0.0, 0.0, rotation)
        local = frame.image_to_local(pts)
        llo, lhi = local.min(axis=0), local.max(axis=0)
        centre, size = frame.local_to_image((llo + lhi) / 2), lhi - llo
    if min(size) <= 0 and max(size) <= 0:
        return None
    return transform(Roi(float(centre[0]), float(centre[1]), float(size[0]), float(size[1]), rotation), rule), can_rotate


def roi_from_box(box: tuple[float, float, float, float], keypoints: np.ndarray, rule: RoiRule) -> Roi:
    """The ROI of a detection (upright box x, y, w, h + keypoints) under a ``from_detection`` rule."""
    kps = np.asarray(keypoints, dtype=np.float64)
    rotation = rotation_of(_point(kps, rule.start), _point(kps, rule.end), rule.target_degrees) if rule.rotate else 0.0
    if rule.box == "alignment":
        centre = _point(kps, rule.start)
        side = 2 * float(np.linalg.norm(_point(kps, rule.end) - centre))
        return transform(Roi(float(centre[0]), float(centre[1]), side, side, rotation), rule)
    x, y, w, h = box
    return transform(Roi(x + w / 2, y + h / 2, w, h, rotation), rule)
