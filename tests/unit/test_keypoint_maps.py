"""The registry's model → dataset keypoint maps (``accuracy.maps``): static checks, and a real check of
the face tables by running the face model on real annotated faces.

Static: every index is in range, schemas and tasks agree, body / hand pairs name the same point,
and a face model's 68- and 98-point tables agree wherever the two markups share a point.

Empirical: the maps are only right if each mapped model point lands on its ground-truth point, so
the face models that can be run here are run top-down on the 300W and WFLW test faces in
``../shared`` and every mapped point's error is checked against the inter-ocular distance (a wrong
index is off by a large part of the face). Skips when the shared data or the model file is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.accuracy.schemas import TASKS, load_schema
from pipeline.calibration.images import crop_and_resize, load_rgb, to_tensor
from pipeline.convert.runners import Runner, runner_for
from pipeline.evaluate.decoders import decoder_for, is_multi_instance
from pipeline.fetch import cache_root
from pipeline.registry import ModelSpec, load_model, model_names
from tests.conftest import REPO, SHARED

KEYPOINTS = SHARED / "data" / "keypoints"
FACE_SETS = {"ibug68": KEYPOINTS / "300w" / "test_300w.json", "wflw98": KEYPOINTS / "wflw" / "test_wflw.json"}
#: A mapped point farther than this from its ground truth (in inter-ocular distances) is a wrong
#: index, not model error: FaceMesh's worst correct pair on these faces is 0.17 (the chin of a
#: tilted face resting on a shoulder); swapping the eyes or taking the nose for a mouth corner
#: gave 0.3-1.0.
MAX_POINT_ERROR = 0.25
#: The mean over all mapped points and faces: 0.04 measured for FaceMesh at box scale 1.4.
MAX_MEAN_ERROR = 0.08


def _maps(spec: ModelSpec) -> dict[str, dict[int, int]]:
    return {name: {int(d): int(m) for d, m in table.items()} for name, table in spec.raw["accuracy"]["maps"].items()}


@pytest.mark.parametrize("name", model_names())
def test_every_model_has_a_consistent_accuracy_block(name: str) -> None:
    spec = load_model(name)
    block = spec.raw["accuracy"]
    assert block["task"] in TASKS
    if is_multi_instance(spec):
        assert "box_scale" not in block  # whole-image evaluation: a box scale would be unused
    else:
        assert 1.0 <= float(block["box_scale"]) <= 2.0
    assert block["maps"], "at least one dataset schema"
    for schema_name, table in _maps(spec).items():
        schema = load_schema(schema_name)
        assert schema.task == block["task"], schema_name
        assert all(0 <= d < schema.count for d in table), f"{schema_name}: dataset index out of 0..{schema.count - 1}"
        assert all(0 <= m < spec.keypoint_count for m in table.values()), f"{schema_name}: model index out of 0..{spec.keypoint_count - 1}"
        assert len(set(table.values())) == len(table), f"{schema_name}: two dataset points share one model point"


@pytest.mark.parametrize("name", [n for n in model_names() if load_model(n).raw["accuracy"]["task"] in ("body", "hand")])
def test_body_and_hand_maps_pair_points_of_the_same_name(name: str) -> None:
    spec = load_model(name)
    for schema_name, table in _maps(spec).items():
        schema = load_schema(schema_name)
        assert len(table) == schema.count, "every dataset point is predicted"
        pairs = {schema.names[d]: spec.keypoint_names[m] for d, m in table.items()}
        assert all(a == b for a, b in pairs.items()), pairs


def test_blazepose_coco_table() -> None:
    table = _maps(load_model("pose_landmark_full"))["coco17"]
    assert table == {0: 0, 1: 2, 2: 5, 3: 7, 4: 8, 5: 11, 6: 12, 7: 13, 8: 14, 9: 15, 10: 16,
                     11: 23, 12: 24, 13: 25, 14: 26, 15: 27, 16: 28}


def test_facemesh_tables() -> None:
    maps = _maps(load_model("face_landmark"))
    ibug, wflw = maps["ibug68"], maps["wflw98"]
    assert len(ibug) == 15 and len(wflw) == 19
    # outer / inner eye corners (subject's right = image left first), nose tip, mouth corners,
    # outer lip centres, chin — the indices TF.js keypoints.ts names
    assert [ibug[i] for i in (36, 39, 42, 45, 30, 48, 54, 51, 57, 8)] == [33, 133, 362, 263, 4, 61, 291, 0, 17, 152]
    assert [wflw[i] for i in (60, 64, 68, 72, 54, 76, 82, 79, 85, 16)] == [33, 133, 362, 263, 4, 61, 291, 0, 17, 152]
    assert [wflw[i] for i in (62, 66, 70, 74)] == [159, 145, 386, 374]  # eyelid middles (WFLW only)


def test_omz_35_tables() -> None:
    maps = _maps(load_model("facial_landmarks_35_adas_0002"))
    assert maps["ibug68"] == {36: 0, 39: 1, 42: 2, 45: 3, 30: 4, 33: 5, 48: 8, 54: 9, 51: 10, 57: 11, 8: 26}
    assert maps["wflw98"] == {60: 0, 64: 1, 68: 2, 72: 3, 54: 4, 57: 5, 76: 8, 82: 9, 79: 10, 85: 11, 16: 26}


@pytest.mark.parametrize("name", [n for n in model_names() if load_model(n).raw["accuracy"]["task"] == "face"])
def test_face_tables_agree_on_shared_points(name: str) -> None:
    """A point both markups define (same schema name) maps to the same model point in both tables."""
    maps = _maps(load_model(name))
    by_name = [{load_schema(s).names[d]: m for d, m in maps[s].items()} for s in ("ibug68", "wflw98")]
    assert by_name[0].keys() <= by_name[1].keys()
    assert all(by_name[1][point] == m for point, m in by_name[0].items())
    for schema_name in ("ibug68", "wflw98"):  # the normalising eye corners are compared too
        assert set(load_schema(schema_name).interocular) <= set(maps[schema_name])


# --- empirical check on real faces ----------------------------------------------------------


def _runnable_file(spec: ModelSpec) -> Path | None:
    """The model as a TFLite / ONNX file this machine already has: fetched source, fetch cache, or float export."""
    source = spec.source
    candidates = [REPO / "build" / "source" / spec.name / "model.tflite"]
    if source.get("sha256"):
        candidates += sorted((cache_root() / "blobs" / "sha256" / source["sha256"]).glob("*.tflite"))
    candidates.append(REPO / "build" / "float" / spec.name / "model.onnx")
    return next((p for p in candidates if p.is_file()), None)


def _faces(path: Path) -> list[tuple[Path, np.ndarray, tuple[float, float, float, float]]]:
    """(image, (P, 3) keypoints, bbox) of each annotation whose box contains its labelled points.

    mmpose's WFLW test file has one face (id 40) whose box is 48 px high around 111 px of
    landmarks; a crop from it cuts the face off, which would test the box, not the map.
    """
    data = json.loads(path.read_text())
    files = {im["id"]: path.parent / im["file_name"] for im in data["images"]}
    out = []
    for ann in data["annotations"]:
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        x, y, w, h = ann["bbox"]
        pts = kp[kp[:, 2] > 0, :2]
        if (pts >= (x, y)).all() and (pts <= (x + w, y + h)).all():
            out.append((files[ann["image_id"]], kp, (x, y, w, h)))
    return out


def _predict(spec: ModelSpec, run: Runner, img_path: Path, bbox: tuple[float, float, float, float], factor: float) -> np.ndarray:
    """Model keypoints in image pixels for the square crop of side factor · max(w, h) around the box centre."""
    x, y, w, h = bbox
    side = max(1, round(max(w, h) * factor))
    x0, y0 = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    pixels = crop_and_resize(load_rgb(img_path), (x0, y0, x0 + side, y0 + side), spec.input)
    poses = decoder_for(spec)(run(to_tensor(pixels, spec.input, "NHWC")), spec)
    return poses.keypoints[0] * np.array([side / spec.input.width, side / spec.input.height]) + (x0, y0)


@pytest.mark.parametrize("name", [n for n in model_names() if load_model(n).raw["accuracy"]["task"] == "face"])
def test_face_maps_land_on_the_ground_truth(name: str) -> None:
    missing = [str(p) for p in FACE_SETS.values() if not p.is_file()]
    if missing:
        pytest.skip(f"shared keypoint test data absent ({', '.join(missing)})")
    spec = load_model(name)
    model_file = _runnable_file(spec)
    if model_file is None:
        pytest.skip(f"{name}: no TFLite / ONNX file here (fetch it, or export the float model, first)")
    run = runner_for(model_file, source_order=model_file.suffix == ".tflite")
    factor = float(spec.raw["accuracy"]["box_scale"])
    errors, lines = [], []
    for schema_name, table in _maps(spec).items():
        schema = load_schema(schema_name)
        left, right = schema.interocular
        for img_path, kp, bbox in _faces(FACE_SETS[schema_name]):
            pred = _predict(spec, run, img_path, bbox, factor)
            iod = float(np.linalg.norm(kp[left, :2] - kp[right, :2]))
            err = {d: float(np.linalg.norm(pred[m] - kp[d, :2])) / iod for d, m in table.items() if kp[d, 2] > 0}
            errors += list(err.values())
            lines.append(f"{schema_name} {img_path.name}: " + " ".join(f"{schema.names[d]}={e:.3f}" for d, e in err.items()))
    report = "\n".join(lines)
    assert errors, "no face to check"
    assert max(errors) < MAX_POINT_ERROR, f"a mapped point is far from its ground truth (error / inter-ocular):\n{report}"
    assert float(np.mean(errors)) < MAX_MEAN_ERROR, report
