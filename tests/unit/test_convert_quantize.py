"""Conversion, verification, int8 export and drift on a tiny model the tests build."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.convert.dequantize import dequantize_tflite_to_onnx
from pipeline.convert.onnx_to_savedmodel import onnx_to_savedmodel
from pipeline.convert.runners import onnx_input_layout
from pipeline.convert.tflite_to_onnx import tflite_to_onnx
from pipeline.convert.verify import compare_models
from pipeline.errors import PosezooError
from pipeline.evaluate.drift import measure_drift
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.onnx import quantize_onnx
from pipeline.quantize.tflite import quantize_tflite
from pipeline.registry import load_model

from tests.conftest import TINY_SIZE, build_tiny_tflite, photo_manifests

pytestmark = pytest.mark.usefixtures("tiny_env")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 12, 6)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, manifests: Path) -> Path:
    out = tmp_path_factory.mktemp("float")
    tflite_to_onnx(tiny_model, out / "model.onnx", opset=17)
    onnx_to_savedmodel(out / "model.onnx", out / "saved_model", manifests / "manifest.json")
    return out


def test_conversions_match_the_source(tiny_model: Path, converted: Path, manifests: Path) -> None:
    spec = load_model("tiny_landmarks").input
    for candidate in (converted / "model.onnx", converted / "saved_model"):
        report = compare_models(tiny_model, candidate, manifests / "manifest.json", spec, atol=1e-3, rtol=1e-4, max_samples=5)
        assert [o["index"] for o in report["outputs"]] == [0, 1]
        assert all(o["ok"] and o["max_abs_diff"] < 1e-3 for o in report["outputs"])
    assert onnx_input_layout(converted / "model.onnx") == "NCHW"
    assert not list((converted / "saved_model").glob("*.tflite"))


def test_verification_fails_on_a_different_model(tmp_path: Path, tiny_model: Path, manifests: Path) -> None:
    other = build_tiny_tflite(tmp_path / "other.tflite", seed=7)
    tflite_to_onnx(other, tmp_path / "other.onnx", opset=17)
    spec = load_model("tiny_landmarks").input
    with pytest.raises(PosezooError, match=r"other\.onnx: output \d differs from .*tolerance") as err:
        compare_models(tiny_model, tmp_path / "other.onnx", manifests / "manifest.json", spec, atol=1e-3, rtol=1e-4, max_samples=3)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("convert", [tflite_to_onnx, dequantize_tflite_to_onnx], ids=["float", "dequantize"])
@pytest.mark.parametrize("content", [b"definitely not a model", b"\x00" * 64])
def test_non_model_file_is_rejected(tmp_path: Path, content: bytes, convert: Any) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    with pytest.raises(PosezooError, match=r"bad\.tflite: not a TFLite flatbuffer"):
        convert(bad, tmp_path / "out.onnx", opset=17)
    assert not (tmp_path / "out.onnx").exists()


def test_truncated_model_is_rejected(tmp_path: Path, tiny_model: Path) -> None:
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    with pytest.raises(PosezooError, match=r"cut\.tflite: truncated or corrupt TFLite file"):
        tflite_to_onnx(cut, tmp_path / "out.onnx", opset=17)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_int8_exports_are_int8_deterministic_and_close(tmp_path: Path, tiny_model: Path, converted: Path, manifests: Path, per_channel: bool) -> None:
    spec = load_model("tiny_landmarks")
    manifest = manifests / "manifest.json"
    files = {}
    for run in ("a", "b"):
        files[run, "tflite"] = tmp_path / run / "m.tflite"
        files[run, "onnx"] = tmp_path / run / "m.onnx"
        quantize_tflite(converted / "saved_model", files[run, "tflite"], manifest, spec.input, QuantConfig(per_channel))
        quantize_onnx(converted / "model.onnx", files[run, "onnx"], manifest, spec.input, QuantConfig(per_channel))
    for fmt in ("tflite", "onnx"):
        assert _sha(files["a", fmt]) == _sha(files["b", fmt]), f"{fmt} export is not reproducible"

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(files["a", "tflite"]))
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert all(d["dtype"] == np.int8 for d in interp.get_output_details())
    import onnx

    ops = {n.op_type for n in onnx.load(str(files["a", "onnx"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    for fmt in ("tflite", "onnx"):
        metrics, rows = measure_drift(spec, tiny_model, files["a", fmt], manifests / "holdout.json")
        assert metrics["samples"] == 6 and metrics["keypoints"] == 5 and len(rows) == 5
        assert 0 < metrics["mean_px"] <= metrics["p95_px"] <= metrics["max_px"] < 3.0
        assert metrics["mean_norm"] == pytest.approx(metrics["mean_px"] / 32)
        assert 0.0 <= metrics["within_2pct"] <= 1.0


def test_per_channel_and_per_tensor_differ(tmp_path: Path, converted: Path, manifests: Path) -> None:
    spec = load_model("tiny_landmarks").input
    manifest = manifests / "manifest.json"
    quantize_tflite(converted / "saved_model", tmp_path / "pc.tflite", manifest, spec, QuantConfig(True))
    quantize_tflite(converted / "saved_model", tmp_path / "pt.tflite", manifest, spec, QuantConfig(False))
    import tflite

    def conv_scale_counts(path: Path) -> list[int]:
        model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
        graph = model.Subgraphs(0)
        counts = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()
            if code == tflite.BuiltinOperator.CONV_2D:
                counts.append(graph.Tensors(op.Inputs(1)).Quantization().ScaleLength())
        return counts

    assert max(conv_scale_counts(tmp_path / "pc.tflite")) > 1
    assert conv_scale_counts(tmp_path / "pt.tflite") and set(conv_scale_counts(tmp_path / "pt.tflite")) == {1}


def test_drift_of_the_float_onnx_is_negligible(tiny_model: Path, converted: Path, manifests: Path) -> None:
    metrics, _ = measure_drift(load_model("tiny_landmarks"), tiny_model, converted / "model.onnx", manifests / "holdout.json")
    assert metrics["max_px"] < 1e-3 and metrics["within_2pct"] == 1.0


def test_canonical_names_make_equal_graphs_byte_identical() -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.convert.canonical import canonicalize

    def graph(suffix: str) -> onnx.ModelProto:
        w = numpy_helper.from_array(np.ones((2, 2), np.float32), f"weight{suffix}")
        nodes = [helper.make_node("MatMul", ["x", f"weight{suffix}"], [f"mid{suffix}"], name=f"mm{suffix}"),
                 helper.make_node("Relu", [f"mid{suffix}"], ["y"], name=f"relu{suffix}")]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
        return helper.make_model(g)

    a, b = canonicalize(graph("__596")), canonicalize(graph("__597"))
    assert a.SerializeToString() == b.SerializeToString()
    assert [n.name for n in a.graph.node] == ["MatMul_0", "Relu_1"]
    assert a.graph.input[0].name == "x" and a.graph.output[0].name == "y"
    onnx.checker.check_model(a)


@pytest.mark.slow
def test_conversion_is_reproducible_across_processes(tmp_path: Path, tiny_model: Path) -> None:
    import subprocess
    import sys

    code = "import sys; from pathlib import Path; from pipeline.convert.tflite_to_onnx import tflite_to_onnx; tflite_to_onnx(Path(sys.argv[1]), Path(sys.argv[2]), 17)"
    for name in ("a.onnx", "b.onnx"):
        subprocess.run([sys.executable, "-c", code, str(tiny_model), str(tmp_path / name)], check=True, capture_output=True)
    assert _sha(tmp_path / "a.onnx") == _sha(tmp_path / "b.onnx")


def test_float_model_with_uint8_pixels_gets_a_float_input(tmp_path: Path, manifests: Path) -> None:
    """MoveNet's float releases take uint8 pixels and cast them; the ONNX takes the same values as float."""
    import onnx
    import tensorflow as tf

    conv = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same")
    conv.build((1, TINY_SIZE, TINY_SIZE, 3))

    @tf.function(input_signature=[tf.TensorSpec((1, TINY_SIZE, TINY_SIZE, 3), tf.uint8)])
    def model(pixels: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(conv(tf.cast(pixels, tf.float32) / 255.0), axis=[1, 2])

    source = tmp_path / "uint8_input.tflite"
    source.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model).convert())
    onnx_path = tmp_path / "model.onnx"
    tflite_to_onnx(source, onnx_path, opset=17)
    assert onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    spec = replace(load_model("tiny_landmarks").input, value_range=(0.0, 255.0))
    report = compare_models(source, onnx_path, manifests / "manifest.json", spec, atol=1e-5, rtol=1e-5, max_samples=3)
    assert all(o["ok"] for o in report["outputs"])
