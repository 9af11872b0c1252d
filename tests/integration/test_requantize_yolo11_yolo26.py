"""ST's YOLO11n-pose (int8 TFLite) and YOLO26n-pose (QDQ int8 ONNX) as requantization sources.

Each registry entry names its file by ST's upstream URL; here it is fetched from the development
copy (``POSEZOO_MIRROR`` = ``../shared/models/reference``, found by its pinned sha256), checked to
have the YOLOv8-pose output layout its decoder block declares, decoded on the COCO photos of the
development data (people found where COCO annotates them, keypoints inside their boxes, COCO
keypoint AP50), dequantized to a float ONNX, verified against the int8 file in output steps with
the tolerance of params.yaml, shown to fail that check when the float model is broken, and the
float model decoded like the int8 one. The ``convert`` stage runs end to end on the QDQ source
(the new source format; the TFLite path's stage runs in test_dvc_requantize.py). Needs ``../shared``
(skips without it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.accuracy.dataset import KeypointDataset, load_dataset
from pipeline.accuracy.groundtruth import evaluate
from pipeline.calibration.sampler import manifest_document
from pipeline.convert.dequantize import DequantizeInfo, verify_dequantized
from pipeline.convert.runners import runner_for
from pipeline.errors import PosezooError
from pipeline.evaluate.decoders import box_iou, decoder_for
from pipeline.fetch import fetch
from pipeline.params import get, load_params
from pipeline.registry import ModelSpec, load_model
from pipeline.roi.detectors import letterbox
from stages.convert import DEQUANTIZERS

from tests.conftest import REPO, SHARED

pytestmark = pytest.mark.slow

REFERENCE = SHARED / "models" / "reference"
COCO = SHARED / "data" / "keypoints" / "coco"
UPSTREAM = "https://github.com/stm32-hotspot/ultralytics/raw/b9c391858c70a5fd119fe0b5cd6172840fac9c90/examples/YOLOv8-STEdgeAI/stedgeai_models/pose_estimation/"
#: registry name → (file under the upstream folder, source format)
CASES = {
    "yolo11n_pose": ("yolo11/yolo11n_256_quant_pc_uf_pose_coco-st.tflite", "tflite-int8"),
    "yolo26n_pose": ("yolo26/yolo26_pose_256_qdq_int8.onnx", "onnx-qdq"),
}
#: Measured on the four COCO photos (12 annotated people, 10 with keypoints found by every model):
#: mean |float − int8| 1.69 steps (YOLO11n), 2.06 (YOLO26n); COCO keypoint AP50 0.76-0.87.
MIN_AP50 = 0.6

if not all((REFERENCE / Path(f).name).is_file() for f, _ in CASES.values()) or not (COCO / "test_coco.json").is_file():
    pytest.skip(f"needs ST's YOLO11n / YOLO26n files in {REFERENCE} and the COCO photos in {COCO}", allow_module_level=True)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The development copy as the offline mirror, and a private fetch cache."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POSEZOO_MIRROR", str(REFERENCE))
        env.setenv("POSEZOO_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def dataset() -> KeypointDataset:
    return load_dataset(COCO / "test_coco.json", None, None, "shared_coco", "keypoints")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The COCO photos, each one whole sample (letterboxed by the registry's input spec)."""
    out = tmp_path_factory.mktemp("coco")
    (out / "images").mkdir()
    samples = []
    for i, photo in enumerate(sorted(COCO.glob("*.jpg"))):
        sha = hashlib.sha256(photo.read_bytes()).hexdigest()
        (out / "images" / f"{sha}.jpg").symlink_to(photo)
        width, height = Image.open(photo).size
        samples.append({"id": f"coco-{i}", "photo": photo.name, "origin": str(photo), "sha256": sha, "file": f"images/{sha}.jpg", "crop": [0.0, 0.0, float(width), float(height)]})
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest_document("shared_coco", "calibration", 0, samples, f"{len(samples)} samples, one per photo")))
    return path


@pytest.fixture(scope="module", params=sorted(CASES))
def fetched(request: pytest.FixtureRequest, mirror: Any) -> tuple[ModelSpec, Path]:
    spec = load_model(request.param)
    return spec, fetch(spec.source)


@pytest.fixture(scope="module")
def dequantized(fetched: tuple[ModelSpec, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, Path, Path, DequantizeInfo]:
    spec, src = fetched
    dest = tmp_path_factory.mktemp(spec.name) / "model.onnx"
    return spec, src, dest, DEQUANTIZERS[spec.source["format"]](src, dest, 17)


def _mean_steps_tolerance() -> float:
    return float(get(load_params(REPO / "params.yaml"), "convert.dequantized_mean_steps", REPO / "params.yaml"))


def test_the_registry_pins_ST_s_upstream_file(fetched: tuple[ModelSpec, Path]) -> None:
    spec, path = fetched
    file, fmt = CASES[spec.name]
    source = spec.source
    assert (source["kind"], source["format"], source["url"]) == ("url", fmt, UPSTREAM + file)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == source["sha256"] == hashlib.sha256((REFERENCE / Path(file).name).read_bytes()).hexdigest()
    assert len(data) == source["size"]
    assert spec.raw["reference"]["figures"] == []  # ST publishes none for these two


def _photos(spec: ModelSpec, dataset: KeypointDataset) -> list[tuple[np.ndarray, np.ndarray]]:
    """(letterboxed input, boxes of the people annotated with keypoints in input pixels) per COCO photo."""
    out = []
    for image_id, file in sorted(dataset.image_files.items()):
        img = Image.open(file)
        x, (px, py) = letterbox(img, spec.input.width, spec.input.height, spec.input.value_range)
        s = min(spec.input.width / img.width, spec.input.height / img.height)
        shift = np.array([px * spec.input.width, py * spec.input.height] * 2, np.float32)
        boxes = [np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]], np.float32) * s + shift for inst in dataset.instances if inst.image_id == image_id and (inst.keypoints[:, 2] > 0).any() for b in [inst.bbox]]
        out.append((x, np.stack(boxes)))
    return out


def _check_people(spec: ModelSpec, run: Callable[[np.ndarray], list[np.ndarray]], dataset: KeypointDataset) -> None:
    """The decoded people are the annotated ones: count, boxes, keypoints inside them, COCO AP50."""
    decode = decoder_for(spec)
    found = 0
    for x, people in _photos(spec, dataset):
        poses = decode(run(x), spec)
        assert abs(len(poses) - len(people)) <= 1, (len(poses), len(people))
        for box, points in zip(poses.boxes, poses.keypoints):
            assert box_iou(box, people).max() >= 0.5  # every detection is an annotated person
            inside = (points[:, 0] >= box[0] - 2) & (points[:, 0] <= box[2] + 2) & (points[:, 1] >= box[1] - 2) & (points[:, 1] <= box[3] + 2)
            assert inside.mean() >= 0.8  # (at worst 15 of 17 measured)
        found += len(poses)
    assert found >= 10
    figures = evaluate(spec, run, dataset)
    assert figures["coco_AP50"] >= MIN_AP50, figures


def test_output_is_the_yolov8_pose_layout(fetched: tuple[ModelSpec, Path], dataset: KeypointDataset) -> None:
    """(1, 56, 1344): cx, cy, w, h, person score, 17 × (x, y, conf), normalized, probabilities."""
    spec, path = fetched
    run = runner_for(path, source_order=True)
    for x, _ in _photos(spec, dataset):
        (out,) = run(x)
        assert out.shape == (1, 5 + 3 * 17, 32 * 32 + 16 * 16 + 8 * 8) == (1, spec.decoder["values_per_anchor"], 1344)
        values = out[0]
        assert 0.0 <= values[4].min() and values[4].max() <= 1.0 and values[4].max() > 0.5  # person scores
        assert 0.0 <= values[7::3].min() and values[7::3].max() <= 1.01  # keypoint confidences (int8 rounding above 1)
        assert -0.1 < values[5::3].min() and values[5::3].max() < 1.1  # normalized keypoint x
        assert values[:4].max() < 2.0  # normalized boxes, not pixels


def test_int8_file_finds_the_coco_people(fetched: tuple[ModelSpec, Path], dataset: KeypointDataset) -> None:
    spec, path = fetched
    _check_people(spec, runner_for(path, source_order=True), dataset)


def test_float_model_matches_the_int8_file(dequantized: tuple[ModelSpec, Path, Path, DequantizeInfo], manifest: Path) -> None:
    import onnx

    spec, src, dest, info = dequantized
    assert info.input_range == pytest.approx(spec.input.value_range, abs=1e-6)
    model = onnx.load(str(dest))
    assert not {n.op_type for n in model.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 256, 256]
    tolerance = _mean_steps_tolerance()
    report = verify_dequantized(src, dest, manifest, spec.input, info, tolerance, 10)
    (out,) = report["outputs"]
    assert report["samples"] == 4 and out["ok"] and out["step_from"] == "int8 output"
    assert 0.5 < out["mean_steps"] <= tolerance  # not a copy: the int8 activation error is real


def test_float_model_finds_the_coco_people(dequantized: tuple[ModelSpec, Path, Path, DequantizeInfo], dataset: KeypointDataset) -> None:
    spec, _, dest, _ = dequantized
    _check_people(spec, runner_for(dest), dataset)


def test_verification_fails_on_a_broken_float_model(tmp_path: Path, dequantized: tuple[ModelSpec, Path, Path, DequantizeInfo], manifest: Path) -> None:
    import onnx
    from onnx import numpy_helper

    spec, src, dest, info = dequantized
    model = onnx.load(str(dest))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(init for init in model.graph.initializer if init.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    onnx.save(model, str(tmp_path / "negated.onnx"))
    with pytest.raises(PosezooError, match=r"negated\.onnx: output 0 differs from the int8 .* output steps on average"):
        verify_dequantized(src, tmp_path / "negated.onnx", manifest, spec.input, info, _mean_steps_tolerance(), 10)


def test_convert_stage_dequantizes_the_qdq_source(tmp_path: Path, mirror: Any, manifest: Path) -> None:
    """`posezoo fetch` + `posezoo convert` on YOLO26n's onnx-qdq source: float ONNX and SavedModel, both verified."""
    from pipeline.cli import main

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {"yolo26n_pose": {"resolution": 256}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    common = ["--model", "yolo26n_pose", "--params", str(tmp_path / "params.yaml")]
    assert main(["fetch", *common, "--out", str(tmp_path / "source")]) == 0
    assert (tmp_path / "source" / "model.onnx").stat().st_size == load_model("yolo26n_pose").source["size"]
    assert main(["convert", *common, "--source-dir", str(tmp_path / "source"), "--manifest", str(manifest), "--out", str(tmp_path / "float"), "--report", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["source"], report["source_format"]) == ("st_qdq_256_pc", "onnx-qdq")
    (out,) = report["dequantized"]["outputs"]
    assert out["ok"] and 0.5 < out["mean_steps"] <= out["tolerance_mean_steps"]
    assert report["saved_model"]["max_abs_diff"] < 1e-3
    assert (tmp_path / "float" / "model.onnx").is_file() and (tmp_path / "float" / "saved_model").is_dir()
