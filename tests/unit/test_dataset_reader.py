"""The COCO-style dataset reader's layouts: flat and nested keypoints, COCO-WholeBody parts, and its errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.accuracy.dataset import KeypointDataset, load_dataset
from pipeline.errors import PosezooError
from tests.conftest import TINY_SIZE, write_registry_entry

RNG = np.random.default_rng(0)


def _points(count: int, x0: float = 10.0, y0: float = 12.0) -> np.ndarray:
    """(count, 3) points inside a 64x64 image, all labelled (v = 2)."""
    xy = np.stack([x0 + np.arange(count) % 7 * 5.0, y0 + np.arange(count) // 7 * 4.0], axis=1)
    return np.concatenate([xy, np.full((count, 1), 2.0)], axis=1)


def _write(folder: Path, annotations: list[dict[str, Any]], images: int = 2) -> Path:
    """A COCO-style JSON beside ``images`` 64x64 PNGs (ids 1..images)."""
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in range(1, images + 1):
        Image.fromarray(RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{image_id}.png")
    doc = {"images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(1, images + 1)], "annotations": annotations}
    path = folder / "annotations.json"
    path.write_text(json.dumps(doc))
    return path


def _hand_json(folder: Path, layout: str) -> Path:
    """Two 21-point hands, keypoints as a flat list, [x, y, v] rows or [x, y] rows."""
    annotations = []
    for ann_id, image_id in ((5, 1), (6, 2)):
        pts = _points(21, 4.0 * image_id)
        keypoints = {"flat": pts.ravel().tolist(), "xyv": pts.tolist(), "xy": pts[:, :2].tolist()}[layout]
        annotations.append({"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": keypoints, "bbox": [2.0, 2.0, 50.0, 50.0], "iscrowd": 0})
    return _write(folder, annotations)


def _summary(data: KeypointDataset) -> list[tuple[Any, ...]]:
    return [(i.ann_id, i.image_id, i.image.name, i.bbox, i.keypoints.tolist(), i.area) for i in data.instances]


def test_flat_and_nested_keypoints_give_the_same_instances(tmp_path: Path) -> None:
    flat, xyv, xy = (load_dataset(_hand_json(tmp_path / layout, layout)) for layout in ("flat", "xyv", "xy"))
    assert flat.schema.name == xyv.schema.name == xy.schema.name == "hand21"
    assert len(flat.instances) == 2 and _summary(flat) == _summary(xyv) == _summary(xy)


def _wholebody(folder: Path, body_count: int = 17) -> Path:
    """Three people: both hands valid; right hand flagged invalid; left hand with every v = 0."""
    annotations = []
    for ann_id, image_id, right_valid, left_labelled in ((7, 1, True, True), (8, 2, False, True), (9, 2, True, False)):
        left, right = _points(21, 5.0), _points(21, 20.0, 30.0)
        if not left_labelled:
            left[:, 2] = 0
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": 1,
                "iscrowd": 0,
                "area": 900.0,
                "bbox": [1.0, 1.0, 60.0, 60.0],
                "keypoints": _points(body_count).ravel().tolist(),
                "lefthand_kpts": left.ravel().tolist(),
                "righthand_kpts": right.ravel().tolist(),
                "face_kpts": _points(68, 3.0, 2.0).ravel().tolist(),
                "foot_kpts": _points(6).ravel().tolist(),
                "lefthand_box": [4.0, 11.0, 32.0, 9.0] if left_labelled else [0.0, 0.0, 0.0, 0.0],
                "righthand_box": [19.0, 29.0, 32.0, 9.0],
                "face_box": [0.0, 0.0, 40.0, 50.0],
                "lefthand_valid": left_labelled,
                "righthand_valid": right_valid,
                "face_valid": True,
                "foot_valid": True,
            }
        )
    return _write(folder, annotations)


def test_wholebody_parts(tmp_path: Path) -> None:
    path = _wholebody(tmp_path)
    body = load_dataset(path)
    assert body.schema.name == "coco17" and [i.ann_id for i in body.instances] == [7, 8, 9]

    left = load_dataset(path, keypoints_field="lefthand_kpts")
    assert left.schema.name == "hand21" and [i.ann_id for i in left.instances] == [7, 8]  # 9's left hand has no labelled point
    assert left.instances[0].bbox == (4.0, 11.0, 32.0, 9.0) and left.instances[0].area == 32.0 * 9.0
    right = load_dataset(path, keypoints_field="righthand_kpts")
    assert [i.ann_id for i in right.instances] == [7, 9]  # 8's right hand is flagged invalid

    hands = load_dataset(path, keypoints_field="hands")
    assert [i.ann_id for i in hands.instances] == [14, 15, 16, 19]  # 2*id (left), 2*id + 1 (right)
    assert [i.image_id for i in hands.instances] == [1, 1, 2, 2]
    assert hands.instances[0].keypoints.tolist() == _points(21, 5.0).tolist()
    assert hands.instances[1].keypoints.tolist() == _points(21, 20.0, 30.0).tolist()
    # the gt handed to pycocotools is the instances, one annotation each, keypoints flat
    assert [(a["id"], a["image_id"], a["bbox"], len(a["keypoints"])) for a in hands.gt["annotations"]] == [
        (i.ann_id, i.image_id, list(i.bbox), 63) for i in hands.instances
    ]
    assert hands.gt["categories"] == [{"id": 1, "name": "hand"}] and len(hands.gt["images"]) == 2

    face = load_dataset(path, keypoints_field="face_kpts")
    assert face.schema.name == "ibug68" and len(face.instances) == 3 and face.instances[0].bbox == (0.0, 0.0, 40.0, 50.0)
    with pytest.raises(PosezooError, match="no keypoint schema has 6 points"):
        load_dataset(path, keypoints_field="foot_kpts")


def test_count_without_schema_names_file_count_and_known_schemas(tmp_path: Path) -> None:
    path = _write(tmp_path / "plain", [{"id": 1, "image_id": 1, "keypoints": _points(7).ravel().tolist()}])
    with pytest.raises(PosezooError) as err:
        load_dataset(path)
    message = str(err.value)
    assert message.startswith(f"{path}: no keypoint schema has 7 points (known: coco17 (17), hand21 (21), ibug68 (68), wflw98 (98))")
    assert "keypoints_field" not in message and "\n" not in message
    with pytest.raises(PosezooError, match=r"no annotation has lefthand_kpts .*the annotations have: keypoints$"):
        load_dataset(path, keypoints_field="lefthand_kpts")

    wholebody = _wholebody(tmp_path / "wholebody", body_count=7)
    with pytest.raises(PosezooError, match=r"7 points .*pick a part with keypoints_field \(lefthand_kpts, righthand_kpts, face_kpts, foot_kpts, hands\)"):
        load_dataset(wholebody)


def test_malformed_keypoints_name_the_annotation(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"id": 41, "image_id": 1, "keypoints": [1.0] * 8}])
    with pytest.raises(PosezooError, match="annotation 41: 8 keypoint values, not a flat x, y, v list"):
        load_dataset(path)
    path = _write(tmp_path, [{"id": 42, "image_id": 1, "keypoints": [[1.0, 2.0, 2], [1.0, 2.0]]}])
    with pytest.raises(PosezooError, match="annotation 42: keypoints are neither"):
        load_dataset(path)
    with pytest.raises(PosezooError, match="keypoints_field 'torso' is unknown"):
        load_dataset(path, keypoints_field="torso")


def test_evaluate_cli_on_nested_keypoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    from pipeline.cli import main
    from pipeline.convert.tflite_to_onnx import tflite_to_onnx

    registry = tmp_path / "registry"
    registry.mkdir()
    entry_path = write_registry_entry(registry, "tiny_hand", tiny_model)
    entry = yaml.safe_load(entry_path.read_text())
    entry["accuracy"] = {"task": "hand", "box_scale": 1.2, "maps": {"hand21": {0: 0, 4: 1, 8: 2, 12: 3, 16: 4}}}
    entry_path.write_text(yaml.safe_dump(entry))
    monkeypatch.setenv("POSEZOO_REGISTRY", str(registry))
    monkeypatch.setenv("POSEZOO_CACHE", str(tmp_path / "cache"))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"models": {"tiny_hand": {"resolution": TINY_SIZE}}}))
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(tiny_model, source / "model.tflite")
    candidate = tmp_path / "candidate.onnx"  # the float model as ONNX stands in for an int8 variant
    tflite_to_onnx(tiny_model, candidate, opset=17)
    dataset, metrics = _hand_json(tmp_path / "hands", "xyv"), tmp_path / "eval.json"
    argv = ["evaluate", "--model", "tiny_hand", "--params", str(params), "--source-dir", str(source), "--int8", str(candidate),
            "--dataset", str(dataset), "--keypoints-field", "keypoints", "--metrics", str(metrics)]
    assert main(argv) == 0
    result = json.loads(metrics.read_text())["accuracy"]["annotations"]
    assert result["schema"] == "hand21" and result["float"]["instances"] == 2
    assert result["int8"]["instances"] == 2 and set(result["delta"]) == {"pck_0.2", "epe_px"}
    assert abs(result["delta"]["epe_px"]) < 0.01
