"""Keras (.keras) sources: conversion through `posezoo convert`, loader choice, bad files, ST's registry entries."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli import main
from pipeline.convert.keras_to_onnx import keras_to_onnx
from pipeline.convert.runners import onnx_input_layout
from pipeline.convert.verify import compare_models
from pipeline.errors import PosezooError
from pipeline.params import model_for
from pipeline.registry import InputSpec, load_model
from tests.conftest import REPO, TINY_SIZE, photo_manifests

NAME = "tiny_keras_heatmaps"
KEYPOINTS = 5
STRIDE = 4


def build_heatmap_model(path: Path, seed: int = 0) -> Path:
    """A 32×32 Keras 3 net ending like ST's MoveNet heatmap head: (1, 8, 8, K) spatial-softmax heatmaps.

    Strided convolutions down to 4×4, a bilinear ×2 upsampling added to the 8×8 features, a 1×1
    head, then ST's softmax (``GlobalMaxPool2D(keepdims)``, ``exp``, ``sum`` over H, W, divide).
    """
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((TINY_SIZE, TINY_SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(image)
    skip = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(skip)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = keras.layers.Add()([x, skip])
    x = keras.layers.Conv2D(KEYPOINTS, 1, use_bias=False)(x)
    peak = keras.layers.GlobalMaxPool2D(keepdims=True)(x)
    x = keras.ops.exp(x - peak)
    heatmaps = x / keras.ops.sum(x, axis=[1, 2], keepdims=True)
    keras.Model(image, heatmaps).save(path)
    return path


def write_entry(folder: Path, model: Path) -> None:
    entry = {
        "name": NAME, "family": "tiny", "task": "test", "description": "tiny Keras heatmap model", "license": "Apache-2.0",
        "source": "local",
        "sources": [{"id": "local", "kind": "local", "format": "keras", "path": str(model),
                     "sha256": hashlib.sha256(model.read_bytes()).hexdigest(), "size": model.stat().st_size, "license": "Apache-2.0"}],
        "input": {"height": TINY_SIZE, "width": TINY_SIZE, "channels": 3, "layout": "NHWC", "color": "RGB", "range": [-1.0, 1.0], "resize": "stretch"},
        "resolutions": [TINY_SIZE],
        "outputs": {"keypoints": 0},
        "decoder": {"kind": "movenet_heatmaps", "stride": STRIDE, "activation": "none"},
        "keypoints": {"count": KEYPOINTS, "names": [f"p{i}" for i in range(KEYPOINTS)]},
        "reference": {"card": None, "figures": []},
    }
    (folder / f"{NAME}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_heatmap_model(tmp_path_factory.mktemp("keras") / "tiny.keras")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 6, 3)


@pytest.fixture()
def project(tmp_path: Path, keras_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry holding the tiny Keras model, its `fetch` output folder and a params.yaml running it."""
    registry = tmp_path / "registry"
    registry.mkdir()
    write_entry(registry, keras_model)
    monkeypatch.setenv("POSEZOO_REGISTRY", str(registry))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {NAME: {"resolution": TINY_SIZE}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "source").mkdir()
    return tmp_path


def _convert(project: Path, manifests: Path) -> int:
    return main(["convert", "--model", NAME, "--source-dir", str(project / "source"), "--manifest", str(manifests / "manifest.json"),
                 "--params", str(project / "params.yaml"), "--out", str(project / "float"), "--report", str(project / "report.json")])


def test_convert_stage_turns_a_keras_model_into_a_matching_float_onnx(project: Path, keras_model: Path, manifests: Path) -> None:
    import onnx

    (project / "source" / "model.keras").write_bytes(keras_model.read_bytes())
    assert _convert(project, manifests) == 0
    report = json.loads((project / "report.json").read_text())
    params = yaml.safe_load((project / "params.yaml").read_text())["convert"]
    assert report["source_format"] == "keras" and report["keras"]["input_shape"] == [1, TINY_SIZE, TINY_SIZE, 3]
    assert report["keras"]["keras_version"].startswith("3.")
    for key in ("onnx", "saved_model"):
        (out,) = report[key]["outputs"]
        assert out["shape"] == [1, TINY_SIZE // STRIDE, TINY_SIZE // STRIDE, KEYPOINTS]
        assert out["ok"] and out["max_abs_diff"] <= params["atol"] + params["rtol"] * out["reference_max_abs"]
        assert out["max_abs_diff"] < 1e-5, key
    assert report["samples"] == min(params["verify_samples"], 6)
    print(f"\ntiny Keras heatmaps: max|Keras-ONNX| {report['onnx']['max_abs_diff']:.3g}, max|Keras-SavedModel| {report['saved_model']['max_abs_diff']:.3g}"
          f" (tolerance {report['onnx']['outputs'][0]['tolerance']:.3g}, {report['samples']} crops)")
    onnx_path = project / "float" / "model.onnx"
    assert onnx_input_layout(onnx_path) == "NCHW"  # the layout every converter writes (onnx2tf's input)
    graph = onnx.load(str(onnx_path)).graph
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [1, 8, 8, KEYPOINTS]
    # The decoder reads the converted model's heatmaps as it reads the Keras model's.
    from pipeline.convert.runners import runner_for
    from pipeline.evaluate.decoders import decoder_for

    spec = load_model(NAME)
    decode = decoder_for(spec)
    x = np.random.default_rng(0).uniform(-1, 1, (1, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
    ref, got = decode(runner_for(project / "source" / "model.keras")(x), spec), decode(runner_for(onnx_path)(x), spec)
    np.testing.assert_allclose(got.keypoints, ref.keypoints, atol=1e-4)


@pytest.mark.parametrize("kind", ["not_a_zip", "truncated", "other_zip"])
def test_a_bad_keras_file_is_a_one_line_error(project: Path, keras_model: Path, manifests: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = project / "source" / "model.keras"
    if kind == "not_a_zip":
        bad.write_bytes(b"definitely not a model")
        reason = "not a readable Keras .keras archive"
    elif kind == "truncated":
        bad.write_bytes(keras_model.read_bytes()[: keras_model.stat().st_size // 2])
        reason = "not a readable Keras .keras archive"
    else:
        with zipfile.ZipFile(bad, "w") as archive:
            archive.writestr("model.onnx", b"\x00" * 16)
        reason = "a zip archive but not a Keras .keras file"
    assert _convert(project, manifests) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"error: {bad}: {reason}") and "Traceback" not in "".join(lines)
    assert not (project / "float").exists() and not (project / "report.json").exists()


def test_a_keras_2_file_is_loaded_by_tf_keras(tmp_path: Path, manifests: Path) -> None:
    """Keras 3 cannot read a Keras 2 archive ("Could not locate class 'Functional'"): the loader follows metadata.json."""
    import tf_keras

    tf_keras.utils.set_random_seed(1)
    image = tf_keras.Input((TINY_SIZE, TINY_SIZE, 3), name="image")
    x = tf_keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(image)
    heat = tf_keras.layers.Conv2D(KEYPOINTS, 3, strides=2, padding="same", activation="sigmoid")(x)
    score = tf_keras.layers.Dense(1)(tf_keras.layers.GlobalAveragePooling2D()(x))
    tf_keras.Model(image, [heat, score]).save(tmp_path / "legacy.keras")
    assert json.loads(zipfile.ZipFile(tmp_path / "legacy.keras").read("metadata.json"))["keras_version"].startswith("2.")
    info = keras_to_onnx(tmp_path / "legacy.keras", tmp_path / "legacy.onnx", opset=17)
    assert info["keras_version"].startswith("2.")
    spec = InputSpec(TINY_SIZE, TINY_SIZE, 3, "NHWC", "RGB", (-1.0, 1.0), "stretch")
    report = compare_models(tmp_path / "legacy.keras", tmp_path / "legacy.onnx", manifests / "manifest.json", spec, atol=1e-3, rtol=1e-4, max_samples=3)
    assert [o["shape"] for o in report["outputs"]] == [[1, 8, 8, KEYPOINTS], [1, 1]]  # the Keras model's output order
    assert all(o["max_abs_diff"] < 1e-5 for o in report["outputs"])


def test_a_lambda_layer_is_refused_not_run(tmp_path: Path) -> None:
    import keras

    image = keras.Input((TINY_SIZE, TINY_SIZE, 3))
    keras.Model(image, keras.layers.Lambda(lambda t: t * 2.0)(image)).save(tmp_path / "lambda.keras")
    with pytest.raises(PosezooError, match=r"lambda\.keras: Keras 3\.\S+ cannot load this model \(.*") as err:
        keras_to_onnx(tmp_path / "lambda.keras", tmp_path / "out.onnx", opset=17)
    assert "\n" not in str(err.value) and not (tmp_path / "out.onnx").exists()


# --- ST's MoveNet heatmap entries ----------------------------------------------------------------

ST_RAW = re.compile(r"^https://github\.com/STMicroelectronics/stm32ai-modelzoo/raw/[0-9a-f]{40}/pose_estimation/movenet/\S+\.(keras|tflite)$")


@pytest.mark.parametrize("name", ["st_movenet_lightning_heatmaps", "movenet_lightning_heatmaps"])
def test_st_heatmap_entries_pin_raw_files_of_one_commit_per_resolution(name: str) -> None:
    spec = load_model(name)
    sources = spec.raw["sources"]
    assert all(s["kind"] == "url" and ST_RAW.match(s["url"]) and s["sha256"] == "" for s in sources)
    assert len({s["url"].split("/")[6] for s in sources}) == 1  # one pinned commit
    for s in sources:
        (res,) = spec.source_resolutions(s)
        assert f"_{res}" in s["url"].rsplit("/", 1)[1]  # each file is its own fixed size
    for res in spec.resolutions:
        at, _ = model_for({"models": {name: {"resolution": res}}}, name)
        assert at.input.height == res and res % int(at.decoder["stride"]) == 0
        assert at.source["format"] == spec.source["format"] and res in spec.source_resolutions(at.source)


def test_st_keras_entry_defaults_to_the_float_keras_file() -> None:
    spec = load_model("st_movenet_lightning_heatmaps")
    assert spec.source["format"] == "keras" and spec.source["url"].endswith("/st_movenet_lightning_a100_heatmaps_192.keras")
    at, _ = model_for({"models": {spec.name: {"resolution": 256}}}, spec.name)
    assert at.source["url"].endswith("/st_movenet_lightning_a100_heatmaps_256.keras")
    assert {s["format"] for s in spec.raw["sources"]} == {"keras", "tflite-int8"}
