"""MediaPipe detectors re-implemented without mediapipe: anchors, decoding, NMS, letterbox removal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.errors import PosezooError
from pipeline.roi import detectors
from pipeline.roi.detectors import (DETECTORS_DIR, Detector, load_config, load_detector, ssd_anchors,
                                    weighted_nms)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, count", [("palm_detection_full", 2016), ("pose_detection", 2254),
                                         ("face_detection_short_range", 896)])
def test_anchor_counts_match_the_models(name: str, count: int) -> None:
    config = load_config(DETECTORS_DIR / f"{name}.yaml")
    anchors = ssd_anchors(config["anchors"])
    assert anchors.shape == (count, 4)
    assert config["decode"]["num_boxes"] == count
    assert np.all(anchors[:, 2:] == 1.0)  # fixed_anchor_size


def test_anchors_follow_mediapipe_golden_order() -> None:
    """First rows of MediaPipe's own golden file for its MobileSSD test config (v0.10.14,
    mediapipe/calculators/tflite/testdata/anchor_golden_file_1.txt, x y w h)."""
    options = dict(num_layers=6, min_scale=0.2, max_scale=0.95, input_size_height=300, input_size_width=300,
                   anchor_offset_x=0.5, anchor_offset_y=0.5, strides=[16, 32, 64, 128, 256, 512],
                   aspect_ratios=[1.0, 2.0, 0.5, 3.0, 0.3333], reduce_boxes_in_lowest_layer=True)
    anchors = ssd_anchors(options)
    golden = [[0.0263158, 0.0263158, 0.1, 0.1], [0.0263158, 0.0263158, 0.282843, 0.141421],
              [0.0263158, 0.0263158, 0.141421, 0.282843], [0.0789474, 0.0263158, 0.1, 0.1]]
    assert anchors.shape == (1917, 4)
    np.testing.assert_allclose(anchors[:4], golden, atol=1e-5)


def test_decodes_synthetic_tensors_to_image_pixels_without_letterbox() -> None:
    """A 400x200 image in the 128x128 face input: scale 0.32, 32 px of padding top and bottom."""
    config = load_config(DETECTORS_DIR / "face_detection_short_range.yaml")
    anchors = ssd_anchors(config["anchors"])
    i = 300
    ax, ay = anchors[i, :2]
    # Wanted, in image pixels: box centre (100, 100), 80 x 40; keypoint 2 at (120, 90).
    # In the letterboxed tensor (normalized): x' = x / 400, y' = 0.25 + 0.5 * y / 200.
    box_t = np.array([0.25, 0.25 + 0.5 * 0.5, 0.2, 0.5 * 0.2])
    kp_t = np.array([0.3, 0.25 + 0.5 * 90 / 200])
    raw = np.zeros((1, 896, 16), np.float32)
    raw[0, :, 2:4] = 10.0
    raw[0, i, :4] = [(box_t[0] - ax) * 128, (box_t[1] - ay) * 128, box_t[2] * 128, box_t[3] * 128]
    raw[0, i, 4 + 2 * 2:4 + 2 * 3] = [(kp_t[0] - ax) * 128, (kp_t[1] - ay) * 128]
    scores = np.full((1, 896, 1), -10.0, np.float32)
    scores[0, i, 0] = 3.0
    seen: list[np.ndarray] = []

    def runner(x: np.ndarray) -> list[np.ndarray]:
        seen.append(x)
        return [raw, scores]

    det = Detector("face_detection_short_range", config, runner)
    (found,) = det(Image.new("RGB", (400, 200), (255, 255, 255)))
    assert found.score == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-6)
    np.testing.assert_allclose(found.box, (60.0, 80.0, 80.0, 40.0), atol=1e-3)
    np.testing.assert_allclose(found.keypoints[2], (120.0, 90.0), atol=1e-3)
    assert found.keypoints.shape == (6, 2)
    x = seen[0]
    assert x.shape == (1, 128, 128, 3)
    assert x[0, 10, 64, 0] == -1.0 and x[0, 64, 64, 0] == pytest.approx(1.0)  # zero border, [-1, 1]


def test_weighted_nms_merges_overlapping_boxes() -> None:
    scores = np.array([0.6, 0.9, 0.8], np.float32)
    boxes = np.array([[0.12, 0.1, 0.52, 0.5], [0.1, 0.1, 0.5, 0.5], [0.7, 0.7, 0.9, 0.9]], np.float32)
    kps = np.array([[[0.3, 0.3]], [[0.2, 0.2]], [[0.8, 0.8]]], np.float32)
    s, b, k = weighted_nms(scores, boxes, kps, 0.3)
    np.testing.assert_allclose(s, [0.9, 0.8])
    np.testing.assert_allclose(b[0], (0.9 * boxes[1] + 0.6 * boxes[0]) / 1.5, atol=1e-6)
    np.testing.assert_allclose(k[0, 0], [0.24, 0.24], atol=1e-6)
    np.testing.assert_allclose(b[1], boxes[2])


def test_unknown_and_broken_detectors_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detectors, "DETECTORS_DIR", tmp_path)
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({"name": "broken", "source": {"kind": "local", "member": "x"}}))
    with pytest.raises(PosezooError, match=r"nope\.yaml: no such detector; use one of broken"):
        load_detector("nope")
    with pytest.raises(PosezooError, match=r"broken\.yaml: `input:` lacks width, height, range"):
        load_detector("broken")
    config = yaml.safe_load((DETECTORS_DIR / "palm_detection_full.yaml").read_text())
    config["decode"]["num_boxes"] = 2000
    (tmp_path / "palm.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(PosezooError, match="give 2016 anchors but num_boxes is 2000"):
        load_detector("palm")


@pytest.mark.slow
def test_real_face_detector_finds_grace_hopper() -> None:
    from pipeline.fetch import fetch

    photos = yaml.safe_load((REPO / "calibration" / "sources.yaml").read_text())["sources"]["default"]["photos"]
    (photo,) = [p for p in photos if p["id"] == "matplotlib/grace_hopper.jpg"]
    image = Image.open(fetch(photo["source"]))
    (face,) = load_detector("face_detection_short_range")(image)
    assert face.score > 0.8
    # Her face (glasses to chin, ear to ear), marked by hand on the 512x600 photo.
    x, y, w, h = face.box
    gx, gy, gw, gh = 170.0, 150.0, 195.0, 185.0
    inter = max(0.0, min(x + w, gx + gw) - max(x, gx)) * max(0.0, min(y + h, gy + gh) - max(y, gy))
    assert inter / (w * h + gw * gh - inter) > 0.6
    right_eye, left_eye, nose, mouth = face.keypoints[:4]
    assert right_eye[0] < left_eye[0]  # subject's right eye is on the image's left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
