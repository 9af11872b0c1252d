"""Ground-truth evaluation end to end on images the test draws: coloured dots a "model" finds.

The fake model returns, for each of three colour channels, the input pixel where that colour
peaks: if the top-down crop, the resize and the map back to image pixels are right, predictions
land on the dots the annotations name, and every metric is at its perfect value; a model that
is off by a known amount lowers them by the expected amount.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.accuracy.dataset import load_dataset
from pipeline.accuracy.groundtruth import accuracy_spec, compare, evaluate
from pipeline.accuracy.sources import read_pts, resolve_dataset
from pipeline.accuracy.topdown import crop_pixels, square_crop, whole_image
from pipeline.errors import PosezooError
from pipeline.registry import load_model

SIZE = 64
# Dot positions (image pixels) per image; channel c marks model keypoint c.
DOTS = {1: [(60.5, 40.5), (100.5, 44.5), (80.5, 90.5)], 2: [(150.5, 100.5), (190.5, 96.5), (170.5, 140.5)]}


def _entry(folder: Path, task: str, schema: str, table: dict[int, int], multi: bool = False) -> None:
    folder.mkdir(exist_ok=True)
    decoder = "{kind: landmarks_flat, values_per_point: 2, coords: input_pixels}"
    (folder / "dots.yaml").write_text(
        f"""name: dots
sources: [{{id: s, kind: local, format: tflite, path: none.tflite, sha256: ""}}]
source: s
input: {{height: {SIZE}, width: {SIZE}, channels: 3, layout: NHWC, color: RGB, range: [0.0, 1.0], resize: stretch}}
resolutions: [{SIZE}]
outputs: {{keypoints: 0}}
decoder: {decoder}
keypoints: {{count: 3}}
accuracy:
  task: {task}
  box_scale: 1.6
  maps: {{{schema}: {json.dumps({str(k): v for k, v in table.items()})}}}
"""
    )


def _dataset(folder: Path, count: int, marks: dict[int, int]) -> Path:
    """Two 240x180 images with three dots; ``marks`` = dataset index → dot (model keypoint)."""
    images, annotations = [], []
    for image_id, dots in DOTS.items():
        pixels = np.full((180, 240, 3), 40, dtype=np.uint8)
        for c, (x, y) in enumerate(dots):
            colour = [0, 0, 0]
            colour[c] = 255
            pixels[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = colour
        Image.fromarray(pixels).save(folder / f"{image_id}.png")
        keypoints = np.zeros((count, 3))
        for index, dot in marks.items():
            keypoints[index] = (*dots[dot], 2)
        xs, ys = [d[0] for d in dots], [d[1] for d in dots]
        bbox = [min(xs) - 10, min(ys) - 10, max(xs) - min(xs) + 20, max(ys) - min(ys) + 20]
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 240, "height": 180})
        annotations.append({"id": 10 + image_id, "image_id": image_id, "category_id": 1, "keypoints": keypoints.ravel().tolist(), "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}))
    return path


def _dot_model(offset: float = 0.0):
    """Runner finding each colour's peak in the input; ``offset`` shifts every x (input pixels)."""

    def run(x: np.ndarray) -> list[np.ndarray]:
        img = x[0]
        out = []
        for c in range(3):
            score = img[..., c] - img[..., [k for k in range(3) if k != c]].max(axis=-1)
            row, col = np.unravel_index(np.argmax(score), score.shape)
            out += [col + 0.5 + offset, row + 0.5]
        return [np.array(out, dtype=np.float32)[None]]

    return run


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "registry"
    monkeypatch.setenv("POSEZOO_REGISTRY", str(folder))
    return folder


def test_crop_round_trip_is_exact() -> None:
    crop = square_crop((10.0, 20.0, 30.0, 50.0), 1.5)
    assert crop.side == 75 and (crop.x0, crop.y0) == (-12, 8)  # centre (25, 45) - 37.5, rounded half to even
    spec = type("S", (), {"width": 50, "height": 50})()
    assert crop.to_image(np.array([[0.0, 0.0], [50.0, 50.0]]), spec).tolist() == [[-12.0, 8.0], [63.0, 83.0]]
    box = whole_image(300, 100)
    assert (box.x0, box.y0, box.side) == (0, -100, 300)


def test_crop_pixels_are_black_outside_the_image(registry: Path) -> None:
    _entry(registry, "hand", "hand21", {0: 0})
    img = Image.new("RGB", (40, 40), (200, 200, 200))
    pixels = crop_pixels(img, square_crop((0, 0, 40, 40), 2.0), load_model("dots").input)
    assert pixels.shape == (SIZE, SIZE, 3)
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[SIZE // 2, SIZE // 2].tolist() == [200, 200, 200]


def test_hand_metrics_perfect_then_shifted(registry: Path, tmp_path: Path) -> None:
    _entry(registry, "hand", "hand21", {0: 0, 4: 1, 8: 2})
    spec = load_model("dots")
    data = load_dataset(_dataset(tmp_path, 21, {0: 0, 4: 1, 8: 2}))
    assert data.schema.name == "hand21" and len(data.instances) == 2
    perfect = evaluate(spec, _dot_model(), data)
    side = float(np.mean([square_crop(inst.bbox, 1.6).side for inst in data.instances]))
    assert perfect["instances"] == 2 and perfect["pck_0.2"] == 1.0
    assert perfect["epe_px"] < side / SIZE  # within one input pixel, in image pixels
    shifted = evaluate(spec, _dot_model(offset=20.0), data)  # 20 input px = 20·side/64 image px
    assert shifted["epe_px"] == pytest.approx(20.0 * side / SIZE, abs=side / SIZE)
    assert shifted["pck_0.2"] < 1.0


def test_face_nme_uses_interocular_distance(registry: Path, tmp_path: Path) -> None:
    _entry(registry, "face", "ibug68", {36: 0, 45: 1, 30: 2})
    data = load_dataset(_dataset(tmp_path, 68, {36: 0, 45: 1, 30: 2}))
    spec = load_model("dots")
    result = compare(spec, _dot_model(), _dot_model(offset=4.0), data, ("float", "int8"))
    assert result["float"]["nme_interocular"] < 0.03 and result["float"]["landmarks_compared"] == 3
    side = float(np.mean([square_crop(inst.bbox, 1.6).side for inst in data.instances]))
    interocular = np.hypot(40.0, 4.0)  # dots 0 and 1 of the first image; the second is the same shape
    expected = 4.0 * side / SIZE / interocular
    assert result["delta"]["nme_interocular"] == pytest.approx(expected, abs=side / SIZE / interocular)


def test_body_topdown_oks_and_ap(registry: Path, tmp_path: Path) -> None:
    _entry(registry, "body", "coco17", {0: 0, 5: 1, 6: 2})
    data = load_dataset(_dataset(tmp_path, 17, {0: 0, 5: 1, 6: 2}))
    spec = load_model("dots")
    perfect = evaluate(spec, _dot_model(), data)
    assert perfect["mean_oks"] > 0.95 and perfect["coco_AP"] == pytest.approx(1.0)
    off = evaluate(spec, _dot_model(offset=12.0), data)
    assert off["mean_oks"] < perfect["mean_oks"] and off["coco_AP"] < 1.0


def test_registry_accuracy_block_is_checked(registry: Path) -> None:
    _entry(registry, "face", "ibug68", {36: 7})
    with pytest.raises(PosezooError, match="outside 0..2"):
        accuracy_spec(load_model("dots"))
    _entry(registry, "legs", "ibug68", {36: 0})
    with pytest.raises(PosezooError, match="accuracy.task"):
        accuracy_spec(load_model("dots"))


def test_dataset_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PosezooError, match="bad.json: not valid JSON"):
        load_dataset(bad)
    path = _dataset(tmp_path, 21, {0: 0})
    (tmp_path / "1.png").unlink()
    with pytest.raises(PosezooError, match="1.png: listed in .* but missing"):
        load_dataset(path)
    with pytest.raises(PosezooError, match="schema 'ibug68' has 68"):
        load_dataset(_dataset(tmp_path, 21, {0: 0}), schema="ibug68")


def test_pts_reader_is_zero_based(tmp_path: Path) -> None:
    pts = tmp_path / "a.pts"
    pts.write_text("version: 1\nn_points:  2\n{\n1.0 2.0\n11.5 3.0\n}\n")
    assert read_pts(pts).tolist() == [[0.0, 1.0], [10.5, 2.0]]
    pts.write_text("version: 1\nn_points:  3\n{\n1.0 2.0\n}\n")
    with pytest.raises(PosezooError, match="header says 3 points"):
        read_pts(pts)


def test_unknown_declared_dataset(tmp_path: Path) -> None:
    decl = tmp_path / "datasets.yaml"
    decl.write_text("datasets:\n  a: {kind: coco, annotations: a.json}\n")
    with pytest.raises(PosezooError, match="no dataset 'b' declared; declared: a"):
        resolve_dataset("b", decl)


def test_instance_manifest_holds_the_evaluation_crop_then_jittered_ones(registry: Path, tmp_path: Path) -> None:
    from pipeline.accuracy.holdout import write_instance_manifest
    from pipeline.calibration.reader import iter_inputs

    _entry(registry, "hand", "hand21", {0: 0})
    data = load_dataset(_dataset(tmp_path, 21, {0: 0}))
    manifest = write_instance_manifest([data], load_model("dots"), tmp_path / "subjects", per_instance=3, jitter=0.1)
    doc = json.loads(manifest.read_text())
    assert doc["num_samples"] == 6 and doc["distinct_photos"] == 2 and doc["split"] == "holdout"
    for n, inst in enumerate(data.instances):
        base = square_crop(inst.bbox, 1.6)
        crops = [s["crop"] for s in doc["samples"][3 * n : 3 * n + 3]]
        assert crops[0] == [base.x0, base.y0, base.x0 + base.side, base.y0 + base.side]
        for x0, y0, x1, y1 in crops[1:]:
            assert 0.9 * base.side <= x1 - x0 <= 1.1 * base.side and abs((x0 + x1) / 2 - (base.x0 + base.side / 2)) <= 0.1 * base.side
    assert len(list(iter_inputs(manifest, load_model("dots").input))) == 6


def test_roi_protocol_frames_instances_as_tracking_would(registry: Path, tmp_path: Path) -> None:
    """With an ROI convention, instances are warped to the rotated ROI of their keypoints and mapped back exactly."""
    _entry(registry, "hand", "hand21", {0: 0, 4: 1, 8: 2})
    entry = registry / "dots.yaml"
    entry.write_text(
        entry.read_text()
        + """roi:
  kind: rect
  border: replicate
  from_detection: {detector: palm_detection_full, box: axis_aligned, start: 0, end: 1}
  from_landmarks: {box: axis_aligned, start: 0, end: 1, target_degrees: 0, scale: [2.0, 2.0], square_long: true}
"""
    )
    spec = load_model("dots")
    data = load_dataset(_dataset(tmp_path, 21, {0: 0, 4: 1, 8: 2}))
    roi = evaluate(spec, _dot_model(), data, protocol="roi")
    box = evaluate(spec, _dot_model(), data, protocol="box")
    assert roi["framing"] == {"roi": 2} and box["framing"] == {"box": 2}
    assert roi["pck_0.2"] == 1.0 and roi["epe_px"] < 2 * 100.0 / SIZE  # within two input pixels (a 5 px dot, argmax)
    # The dots' extents are 40 x 50 and 40 x 44 px: ROI sides 2 x 50 and 2 x 44 px, so 20 input px
    # are 20 x side / 64 image px, whichever way the ROI is turned.
    shifted = evaluate(spec, _dot_model(offset=20.0), data, protocol="roi")
    assert shifted["epe_px"] == pytest.approx(20.0 * (100.0 + 88.0) / 2 / SIZE, abs=100.0 / SIZE)
    with pytest.raises(PosezooError, match="accuracy.crop is 'tight'"):
        evaluate(spec, _dot_model(), data, protocol="tight")
