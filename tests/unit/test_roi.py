"""ROI geometry (MediaPipe's rect rules as registry data) and the warp / inverse keypoint map."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from pipeline.accuracy.topdown import truth_roi
from pipeline.registry import InputSpec, load_model
from pipeline.roi.conventions import roi_spec
from pipeline.roi.geometry import Roi, RoiRule, roi_from_box, roi_from_points, rotation_of, transform
from pipeline.roi.warp import to_image, to_input, warp

SPEC = InputSpec(224, 224, 3, "NHWC", "RGB", (0.0, 1.0), "stretch")


def _upright_hand() -> np.ndarray:
    """21 hand keypoints (MediaPipe order) of an upright right hand, wrist at the origin, fingers up (-y)."""
    pts = np.zeros((21, 2))
    pts[0] = (0, 0)
    for finger, x in enumerate((-40.0, -20.0, 0.0, 20.0, 40.0)):  # thumb .. pinky: 4 joints each
        for joint in range(4):
            pts[1 + 4 * finger + joint] = (x * (1 + 0.1 * joint), -30.0 - 25.0 * joint - (10.0 if finger == 0 else 20.0))
    return pts


def _turned(points: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    """Points turned by ``angle`` (MediaPipe's sense: clockwise on screen) and moved to ``centre``."""
    return Roi(centre[0], centre[1], 0.0, 0.0, angle).local_to_image(points)


def test_hand_roi_follows_mediapipe_tracking_rule() -> None:
    rule = roi_spec(load_model("hand_landmark_full")).from_landmarks
    upright = _upright_hand()
    got, rotated = roi_from_points(upright + (300.0, 400.0), np.ones(21, bool), rule)
    assert rotated and got.rotation == pytest.approx(0.0, abs=1e-9)
    # Expected by hand: the box of the 12 partial landmarks, shifted up by 0.1 of its height,
    # squared on the long side and doubled.
    sub = upright[[0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]]
    lo, hi = sub.min(axis=0), sub.max(axis=0)
    w, h = hi - lo
    centre = (lo + hi) / 2 + (0.0, -0.1 * h) + (300.0, 400.0)
    assert (got.cx, got.cy) == pytest.approx(tuple(centre))
    assert got.width == pytest.approx(2 * max(w, h)) and got.height == pytest.approx(2 * max(w, h))
    for degrees in (30.0, -75.0, 160.0):
        angle = math.radians(degrees)
        turned, _ = roi_from_points(_turned(upright, angle, (500.0, 250.0)), np.ones(21, bool), rule)
        assert turned.rotation == pytest.approx(angle, abs=1e-9)
        assert turned.width == pytest.approx(got.width) and turned.height == pytest.approx(got.height)
        expected = _turned(np.array([[got.cx - 300.0, got.cy - 400.0]]), angle, (500.0, 250.0))[0]
        assert (turned.cx, turned.cy) == pytest.approx(tuple(expected))


def test_rotation_sign_and_target_angle() -> None:
    # Fingers pointing right in the image: the crop must turn them up, i.e. rotate by +90 degrees.
    assert rotation_of(np.array([0.0, 0.0]), np.array([10.0, 0.0]), 90.0) == pytest.approx(math.pi / 2)
    assert rotation_of(np.array([0.0, 0.0]), np.array([0.0, -10.0]), 90.0) == pytest.approx(0.0)
    # Eyes level (target 0): no rotation; eyes along +y (face turned clockwise): -90 degrees.
    assert rotation_of(np.array([0.0, 0.0]), np.array([10.0, 0.0]), 0.0) == pytest.approx(0.0)
    assert rotation_of(np.array([0.0, 0.0]), np.array([0.0, 10.0]), 0.0) == pytest.approx(math.pi / 2)


def test_rect_transformation_shifts_in_the_rotated_frame() -> None:
    rule = RoiRule.parse({"box": "axis_aligned", "start": 0, "end": 1, "shift": [0.0, -0.5], "scale": [2.6, 2.6]}, "test")
    moved = transform(Roi(100.0, 100.0, 40.0, 20.0, math.pi / 2), rule)
    # shift_y -0.5 of the height (20) along the rect's own up, which points +x in the image at +90 degrees.
    assert (moved.cx, moved.cy) == pytest.approx((110.0, 100.0))
    assert (moved.width, moved.height) == pytest.approx((104.0, 104.0))  # squared to 40, then x 2.6


def test_palm_detection_roi() -> None:
    rule = roi_spec(load_model("hand_landmark_lite")).from_detection
    keypoints = np.zeros((7, 2))
    keypoints[0], keypoints[2] = (50.0, 100.0), (50.0, 60.0)  # wrist centre below the middle MCP: upright
    roi = roi_from_box((30.0, 50.0, 40.0, 60.0), keypoints, rule)
    assert roi.rotation == pytest.approx(0.0)
    assert (roi.cx, roi.cy) == pytest.approx((50.0, 80.0 - 30.0))
    assert roi.width == pytest.approx(60.0 * 2.6)


def test_body_ground_truth_roi_is_rotated_with_the_torso() -> None:
    spec = load_model("pose_landmark_full")
    convention = roi_spec(spec)
    table = spec.raw["accuracy"]["maps"]["coco17"]
    coco = np.zeros((17, 3))
    coco[:, 2] = 2
    coco[[5, 6, 11, 12], :2] = [(-20, -60), (20, -60), (-15, 0), (15, 0)]  # shoulders 60 px above the hips
    coco[[15, 16], :2] = [(-15, 80), (15, 80)]  # ankles
    coco[0, :2] = (0, -90)  # nose
    base, rotated = truth_roi(coco, {int(k): int(v) for k, v in table.items()}, spec.keypoint_count, convention.truth_rule)
    assert rotated and base.rotation == pytest.approx(0.0)
    radius = 90.0  # the farthest labelled point from the hips' centre: the nose
    assert base.width == pytest.approx(2 * radius * 1.25) and (base.cx, base.cy) == pytest.approx((0.0, 0.0))
    turned = coco.copy()
    turned[:, :2] = _turned(coco[:, :2], math.radians(40), (0.0, 0.0))
    roi, _ = truth_roi(turned, {int(k): int(v) for k, v in table.items()}, spec.keypoint_count, convention.truth_rule)
    assert roi.rotation == pytest.approx(math.radians(40)) and roi.width == pytest.approx(base.width)


def test_unlabelled_rotation_point_gives_an_upright_roi() -> None:
    rule = roi_spec(load_model("hand_landmark_full")).from_landmarks
    labelled = np.ones(21, bool)
    labelled[9] = False
    roi, rotated = roi_from_points(_turned(_upright_hand(), 1.0, (0.0, 0.0)), labelled, rule)
    assert not rotated and roi.rotation == 0.0
    assert roi_from_points(_upright_hand(), np.eye(21, dtype=bool)[0], rule) is None  # one point: no box


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_keypoints_round_trip_through_the_warp_maps(resize: str) -> None:
    spec = InputSpec(192, 256, 3, "NHWC", "RGB", (0.0, 1.0), resize)
    rng = np.random.default_rng(0)
    for _ in range(20):
        roi = Roi(*rng.uniform(50, 500, 2), *rng.uniform(20, 900, 2), rng.uniform(-math.pi, math.pi))
        xy = rng.uniform(-100, 1000, size=(50, 2))
        assert np.abs(to_image(to_input(xy, roi, spec), roi, spec) - xy).max() < 0.01


@pytest.mark.parametrize("size", [60.0, 224.0, 700.0])
def test_warp_puts_an_image_point_where_the_forward_map_says(size: float) -> None:
    """A bright square at a known image position lands at to_input() of it, rotated or not, reduced or not."""
    img = np.zeros((800, 900, 3), dtype=np.uint8)
    img[395:405, 495:505] = 255  # centred on (500, 400)
    for degrees in (0.0, 35.0, -120.0):
        roi = Roi(480.0, 390.0, size, size, math.radians(degrees))
        pixels = warp(Image.fromarray(img), roi, SPEC).astype(float)[..., 0]
        ys, xs = np.nonzero(pixels > 0.5 * pixels.max())
        weights = pixels[ys, xs]
        found = np.array([np.average(xs + 0.5, weights=weights), np.average(ys + 0.5, weights=weights)])
        expected = to_input(np.array([500.0, 400.0]), roi, SPEC)
        assert np.abs(found - expected).max() < 1.0, (size, degrees, found, expected)


def test_upright_warp_of_the_whole_image_is_the_identity() -> None:
    arr = np.random.default_rng(1).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    assert np.array_equal(warp(Image.fromarray(arr), Roi(112.0, 112.0, 224.0, 224.0), SPEC), arr)


def test_outside_the_image_is_padded_as_the_border_mode_says() -> None:
    arr = np.full((100, 100, 3), 200, dtype=np.uint8)
    roi = Roi(100.0, 50.0, 100.0, 100.0)  # the right half of the ROI is outside the image
    spec = InputSpec(100, 100, 3, "NHWC", "RGB", (0.0, 1.0), "stretch")
    zero = warp(Image.fromarray(arr), roi, spec, "zero")
    replicate = warp(Image.fromarray(arr), roi, spec, "replicate")
    assert zero[:, 80:].max() == 0 and zero[:, :40].min() == 200
    assert replicate.min() == 200


def test_every_family_convention_parses() -> None:
    for name in ("hand_landmark_full", "hand_landmark_lite", "pose_landmark_full", "face_landmark", "movenet_lightning", "yolov8n_pose"):
        convention = roi_spec(load_model(name))
        assert convention is not None, name
        if convention.kind == "rect":
            assert convention.detector and convention.from_detection and convention.truth_rule, name
