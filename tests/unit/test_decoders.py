"""Decoders on synthetic outputs with hand-computable answers, one or more tests per output kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipeline.convert.runners import _dequantize
from pipeline.errors import PosezooError
from pipeline.evaluate import drift
from pipeline.evaluate.decoders import (
    Poses,
    decoder_for,
    is_multi_instance,
    landmarks_flat,
    match_instances,
    movenet_heatmaps,
    movenet_singlepose,
    yolov8_pose,
)
from pipeline.registry import MODELS_DIR, ModelSpec, _parse


def make_spec(tmp_path: Path, decoder: dict[str, Any], count: int, height: int = 64, width: int = 64) -> ModelSpec:
    """A minimal registry entry parsed the way the registry parses real ones."""
    entry = {
        "name": "synthetic",
        "source": "local",
        "sources": [{"id": "local", "kind": "local", "format": "tflite", "path": "none.tflite"}],
        "input": {"height": height, "width": width, "channels": 3, "layout": "NHWC", "color": "RGB", "range": [0.0, 1.0], "resize": "stretch"},
        "resolutions": [height],
        "outputs": {"keypoints": 0},
        "decoder": decoder,
        "keypoints": {"count": count},
    }
    path = tmp_path / "synthetic.yaml"
    path.write_text(yaml.safe_dump(entry))
    return _parse(path)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


# --- landmarks_flat ----------------------------------------------------------------------------


def test_hand_landmarks_xyz_in_pixels(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"kind": "landmarks_flat", "values_per_point": 3, "coords": "input_pixels"}, count=21, height=224, width=224)
    points = np.stack([np.arange(21) * 2.0, np.arange(21) * 3.0, np.full(21, -7.0)], axis=1)  # x, y, z
    poses = landmarks_flat([points.reshape(1, 63)], spec)
    assert len(poses) == 1 and poses.boxes is None
    assert poses.keypoints.shape == (1, 21, 2) and poses.keypoints.dtype == np.float32
    np.testing.assert_array_equal(poses.keypoints[0], points[:, :2])
    np.testing.assert_array_equal(poses.scores, np.ones((1, 21)))
    np.testing.assert_array_equal(poses.instance_scores, [1.0])


def test_face_mesh_468_points(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"kind": "landmarks_flat", "values_per_point": 3, "coords": "input_pixels"}, count=468, height=192, width=192)
    out = np.arange(1404, dtype=np.float32).reshape(1, 1, 1, 1404)
    poses = landmarks_flat([out], spec)
    assert poses.keypoints.shape == (1, 468, 2)
    np.testing.assert_array_equal(poses.keypoints[0, 467], [1401.0, 1402.0])


def test_blazepose_uses_33_of_39_points_and_sigmoid_visibility(tmp_path: Path) -> None:
    decoder = {"kind": "landmarks_flat", "values_per_point": 5, "num_points": 39, "coords": "input_pixels", "score_index": 3, "score_activation": "sigmoid"}
    spec = make_spec(tmp_path, decoder, count=33, height=256, width=256)
    values = np.zeros((39, 5), dtype=np.float32)
    values[:, 0], values[:, 1] = np.arange(39), 100 + np.arange(39)
    values[0, 3], values[1, 3], values[2, 3] = 0.0, 2.0, -40.0  # visibility logits
    poses = landmarks_flat([values.reshape(1, 195)], spec)
    assert poses.keypoints.shape == (1, 33, 2)
    np.testing.assert_array_equal(poses.keypoints[0, 32], [32.0, 132.0])
    np.testing.assert_allclose(poses.scores[0, :3], [0.5, sigmoid(2.0), 0.0], atol=1e-6)


def test_normalized_xy_scales_x_by_width_and_y_by_height(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"kind": "landmarks_flat", "values_per_point": 2, "coords": "normalized_xy"}, count=35, height=40, width=80)
    out = np.tile([0.5, 0.25], 35).reshape(1, 70)
    poses = landmarks_flat([out], spec)
    np.testing.assert_allclose(poses.keypoints[0], np.tile([40.0, 10.0], (35, 1)))


def test_flat_output_of_the_wrong_size_is_an_error(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"kind": "landmarks_flat", "values_per_point": 3, "coords": "input_pixels"}, count=21)
    with pytest.raises(PosezooError, match="63"):
        landmarks_flat([np.zeros((1, 1))], spec)  # e.g. outputs.keypoints pointing at the presence score


def test_unknown_coords_is_an_error(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"kind": "landmarks_flat", "values_per_point": 2, "coords": "polar"}, count=1)
    with pytest.raises(PosezooError, match="coords"):
        landmarks_flat([np.zeros((1, 2))], spec)


# --- movenet_singlepose ------------------------------------------------------------------------


def test_movenet_yx_becomes_xy(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"kind": "movenet_singlepose", "coords": "normalized_yx"}, count=17, height=192, width=192)
    out = np.zeros((1, 1, 17, 3), dtype=np.float32)
    out[0, 0, 0] = [0.25, 0.75, 0.9]  # y, x, score
    poses = movenet_singlepose([out], spec)
    np.testing.assert_allclose(poses.keypoints[0, 0], [144.0, 48.0])
    np.testing.assert_allclose(poses.scores[0, 0], 0.9)


def test_movenet_honours_the_coords_field(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"kind": "movenet_singlepose", "coords": "normalized_xy"}, count=17, height=192, width=192)
    out = np.zeros((1, 1, 17, 3), dtype=np.float32)
    out[0, 0, 0] = [0.25, 0.75, 0.9]
    np.testing.assert_allclose(movenet_singlepose([out], spec).keypoints[0, 0], [48.0, 144.0])


# --- movenet_heatmaps --------------------------------------------------------------------------

STRIDE, SIGMA = 4, 4.0


def gaussian_heatmaps(centres: list[tuple[float, float]], cells: int = 16) -> np.ndarray:
    """(1, cells, cells, K) Gaussians in input pixels, sampled at cell centres ((i + 0.5) * stride)."""
    c = (np.arange(cells) + 0.5) * STRIDE
    maps = [np.exp(-((c[None, :] - x) ** 2 + (c[:, None] - y) ** 2) / (2 * SIGMA**2)) for x, y in centres]
    return np.stack(maps, axis=-1)[None].astype(np.float32)


def heatmap_spec(tmp_path: Path, activation: str = "none") -> ModelSpec:
    return make_spec(tmp_path, {"kind": "movenet_heatmaps", "stride": STRIDE, "activation": activation}, count=2)


def test_heatmap_quarter_shift_moves_toward_the_true_peak(tmp_path: Path) -> None:
    truth = (23.2, 36.6)  # cell (row 9, col 5): centre (22, 38); right and upper neighbours are higher
    poses = movenet_heatmaps([gaussian_heatmaps([truth, (2.0, 2.0)])], heatmap_spec(tmp_path))
    np.testing.assert_allclose(poses.keypoints[0, 0], [23.0, 37.0])  # (5.5 + 0.25) * 4, (9.5 - 0.25) * 4
    plain_argmax = np.array([22.0, 38.0])
    assert np.linalg.norm(poses.keypoints[0, 0] - truth) < np.linalg.norm(plain_argmax - truth)
    np.testing.assert_allclose(poses.scores[0, 0], np.exp(-(1.2**2 + 1.4**2) / (2 * SIGMA**2)), rtol=1e-5)


def test_heatmap_peak_in_a_border_cell_gets_no_shift(tmp_path: Path) -> None:
    poses = movenet_heatmaps([gaussian_heatmaps([(23.2, 36.6), (2.0, 2.0)])], heatmap_spec(tmp_path))
    np.testing.assert_allclose(poses.keypoints[0, 1], [2.0, 2.0])  # cell (0, 0) centre, no neighbour before it
    np.testing.assert_allclose(poses.scores[0, 1], 1.0)


def test_heatmap_sigmoid_activation(tmp_path: Path) -> None:
    logits = 8.0 * gaussian_heatmaps([(23.2, 36.6), (2.0, 2.0)]) - 4.0
    poses = movenet_heatmaps([logits], heatmap_spec(tmp_path, "sigmoid"))
    np.testing.assert_allclose(poses.keypoints[0, 0], [23.0, 37.0])
    peak = 8.0 * np.exp(-(1.2**2 + 1.4**2) / (2 * SIGMA**2)) - 4.0
    np.testing.assert_allclose(poses.scores[0, 0], sigmoid(peak), rtol=1e-5)


def test_heatmap_size_must_match_input_and_stride(tmp_path: Path) -> None:
    with pytest.raises(PosezooError, match="stride"):
        movenet_heatmaps([np.zeros((1, 8, 8, 2), dtype=np.float32)], heatmap_spec(tmp_path))


# --- yolov8_pose -------------------------------------------------------------------------------

YOLO = {"kind": "yolov8_pose", "values_per_anchor": 11, "coords": "input_pixels", "keypoint_conf": "probability", "score_threshold": 0.25, "iou_threshold": 0.7, "max_detections": 20}


def yolo_output(anchors: list[list[float]]) -> np.ndarray:
    """(1, 5 + 3K, N) from per-anchor rows cx, cy, w, h, score, K × (x, y, conf)."""
    return np.asarray(anchors, dtype=np.float32).T[None]


PERSON_A = [30, 30, 20, 40, 0.9, 25, 15, 0.8, 35, 45, 0.6]
PERSON_A_DUPLICATE = [31, 30, 20, 40, 0.8, 26, 15, 0.7, 36, 45, 0.5]  # IoU with A ≈ 0.90
PERSON_B = [80, 40, 10, 10, 0.5, 78, 38, 0.4, 82, 42, 0.3]
WEAK = [10, 10, 4, 4, 0.2, 9, 9, 0.9, 11, 11, 0.9]


def test_yolo_nms_keeps_the_higher_of_overlapping_boxes(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, YOLO, count=2, width=128)
    poses = yolov8_pose([yolo_output([PERSON_A_DUPLICATE, PERSON_B, PERSON_A])], spec)
    assert len(poses) == 2
    np.testing.assert_allclose(poses.instance_scores, [0.9, 0.5])
    np.testing.assert_allclose(poses.boxes, [[20, 10, 40, 50], [75, 35, 85, 45]])
    np.testing.assert_allclose(poses.keypoints[0], [[25, 15], [35, 45]])
    np.testing.assert_allclose(poses.scores[1], [0.4, 0.3])
    assert is_multi_instance(spec)


def test_yolo_score_threshold_filters(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, dict(YOLO, score_threshold=0.6), count=2, width=128)
    poses = yolov8_pose([yolo_output([PERSON_B, WEAK])], spec)
    assert len(poses) == 0
    assert poses.keypoints.shape == (0, 2, 2) and poses.boxes is not None and poses.boxes.shape == (0, 4)


def test_yolo_both_axis_orders_decode_the_same(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, YOLO, count=2, width=128)
    values_first = yolo_output([PERSON_A, PERSON_B, WEAK])
    a = yolov8_pose([values_first], spec)
    b = yolov8_pose([values_first.transpose(0, 2, 1)], spec)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_yolo_normalized_coords_scale_by_width_and_height(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, dict(YOLO, coords="normalized_xy"), count=2, height=100, width=200)
    person = [0.5, 0.5, 0.2, 0.4, 0.9, 0.25, 0.5, 0.8, 0.75, 0.1, 0.6]
    poses = yolov8_pose([yolo_output([person])], spec)
    np.testing.assert_allclose(poses.boxes, [[80, 30, 120, 70]])
    np.testing.assert_allclose(poses.keypoints[0], [[50, 50], [150, 10]])


def test_yolo_logit_keypoint_confidences(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, dict(YOLO, keypoint_conf="logit"), count=2, width=128)
    person = PERSON_A[:7] + [0.0] + PERSON_A[8:10] + [3.0]
    poses = yolov8_pose([yolo_output([person])], spec)
    np.testing.assert_allclose(poses.scores[0], [0.5, sigmoid(3.0)], rtol=1e-6)


def test_yolo_max_detections(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, dict(YOLO, max_detections=1), count=2, width=128)
    poses = yolov8_pose([yolo_output([PERSON_B, PERSON_A])], spec)
    np.testing.assert_allclose(poses.instance_scores, [0.9])


def test_yolo_values_per_anchor_must_fit_the_output(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, YOLO, count=2, width=128)
    with pytest.raises(PosezooError, match="values_per_anchor"):
        yolov8_pose([np.zeros((1, 12, 30), dtype=np.float32)], spec)


def test_yolo_int8_output_decodes_within_one_quantization_step() -> None:
    """Quantize a synthetic 256x256 YOLOv8 output to int8, dequantize as the runners do, decode both."""
    spec = _registry_spec("yolov8n_pose")
    rng = np.random.default_rng(0)
    raw = np.zeros((56, 1344), dtype=np.float32)
    for anchor, (cx, cy, w, h, score) in zip((100, 200, 900), ((0.3, 0.5, 0.2, 0.6, 0.9), (0.32, 0.5, 0.2, 0.6, 0.7), (0.75, 0.4, 0.3, 0.5, 0.6))):
        raw[:5, anchor] = cx, cy, w, h, score
        raw[5:, anchor] = rng.uniform(0.05, 0.95, 51)
    raw = raw[None]
    lo, hi = float(raw.min()), float(raw.max())
    scale = (hi - lo) / 255.0
    zero = int(round(-128 - lo / scale))
    q = np.clip(np.round(raw / scale) + zero, -128, 127).astype(np.int8)
    deq = _dequantize(q, {"quantization": (scale, zero), "dtype": np.int8})
    ref, got = yolov8_pose([raw], spec), yolov8_pose([deq], spec)
    assert len(ref) == len(got) == 2  # anchor 200 overlaps anchor 100 (IoU ≈ 0.82) and is suppressed
    step_px = scale * 256
    np.testing.assert_allclose(got.keypoints, ref.keypoints, atol=step_px)
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=step_px)
    np.testing.assert_allclose(got.scores, ref.scores, atol=scale)


# --- match_instances ---------------------------------------------------------------------------


def boxed(boxes: list[list[float]]) -> Poses:
    n = len(boxes)
    return Poses(np.zeros((n, 1, 2), np.float32), np.ones((n, 1), np.float32), np.ones(n, np.float32), np.asarray(boxes, np.float32).reshape(n, 4))


def test_match_instances_pairs_by_iou_and_skips_weak_overlaps() -> None:
    a = boxed([[0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110]])
    b = boxed([[21, 20, 31, 30], [0, 0, 10, 12], [200, 200, 210, 210]])  # IoU 0.818 with a1, 0.833 with a0
    assert match_instances(a, b, 0.5) == [(0, 1), (1, 0)]
    assert match_instances(a, b, 0.82) == [(0, 1)]


def test_match_instances_is_greedy_on_the_highest_iou() -> None:
    a = boxed([[0, 0, 10, 10], [0, 0, 10, 12]])
    b = boxed([[0, 0, 10, 11]])  # IoU 0.909 with a0, 0.917 with a1
    assert match_instances(a, b, 0.5) == [(1, 0)]


def test_match_instances_empty_and_boxless() -> None:
    assert match_instances(boxed([]), boxed([[0, 0, 1, 1]]), 0.5) == []
    single = Poses(np.zeros((1, 1, 2), np.float32), np.ones((1, 1), np.float32), np.ones(1, np.float32), None)
    with pytest.raises(PosezooError, match="boxes"):
        match_instances(single, single, 0.5)


# --- registry and drift ------------------------------------------------------------------------


def _registry_spec(name: str) -> ModelSpec:
    return _parse(MODELS_DIR / f"{name}.yaml")


def test_every_built_in_model_has_a_decoder() -> None:
    for path in sorted(MODELS_DIR.glob("*.yaml")):
        spec = _parse(path)
        decoder_for(spec)
        assert is_multi_instance(spec) == (spec.decoder["kind"] == "yolov8_pose")


def test_unknown_kind_is_a_clear_error(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"kind": "centernet"}, count=1)
    with pytest.raises(PosezooError, match="centernet"):
        decoder_for(spec)


def test_multi_instance_drift_matches_detections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Float finds two people; int8 finds them in the other order, 1 px to the right, plus a third."""
    spec = _registry_spec("yolov8n_pose")
    people = [(0.3, 0.5, 0.9), (0.75, 0.4, 0.8)]
    float_out = np.zeros((1, 56, 1344), np.float32)
    int8_out = np.zeros((1, 56, 1344), np.float32)
    for anchor, (cx, cy, score) in enumerate(people):
        float_out[0, :5, anchor] = cx, cy, 0.2, 0.5, score
        float_out[0, 5::3, anchor], float_out[0, 6::3, anchor], float_out[0, 7::3, anchor] = cx, cy, 0.9
        int8_out[0, :, 10 - anchor] = float_out[0, :, anchor]
        int8_out[0, 5::3, 10 - anchor] += 1.0 / 256
    int8_out[0, :5, 500] = 0.1, 0.1, 0.1, 0.1, 0.5
    outputs = {"float": [float_out], "int8": [int8_out]}
    monkeypatch.setattr(drift, "runner_for", lambda path, source_order=False: lambda x: outputs[str(path)])
    monkeypatch.setattr(drift, "read_manifest", lambda path: {"samples": [0, 1, 2]})
    monkeypatch.setattr(drift, "iter_inputs", lambda *args: iter([(i, None) for i in range(3)]))
    metrics, rows = drift.measure_drift(spec, Path("float"), Path("int8"), Path("holdout.json"))
    assert (metrics["samples"], metrics["instances_ref"], metrics["instances_int8"], metrics["instances_matched"]) == (3, 6, 9, 6)
    assert metrics["keypoints"] == 17 and len(rows) == 17
    np.testing.assert_allclose([metrics["mean_px"], metrics["max_px"]], [1.0, 1.0], atol=1e-4)
