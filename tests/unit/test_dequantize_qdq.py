"""Dequantizing a QDQ int8 ONNX into a float ONNX, on tiny models the tests build and quantize themselves."""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationDataReader

from pipeline.calibration.reader import iter_inputs
from pipeline.convert.dequantize import DequantizeInfo, verify_dequantized
from pipeline.convert.dequantize_qdq import dequantize_qdq_onnx, remove_qdq
from pipeline.convert.runners import runner_for
from pipeline.errors import PosezooError
from pipeline.registry import InputSpec

from tests.conftest import TINY_SIZE, photo_manifests

SPEC = InputSpec(height=TINY_SIZE, width=TINY_SIZE, channels=3, layout="NCHW", color="RGB", value_range=(0.0, 1.0), resize="stretch")
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 12, 6) / "manifest.json"


def _tiny_float_onnx() -> Any:
    """A 32×32 NCHW conv net (Conv → SiLU, Conv → ReLU, pooling, two heads), like a small YOLO stem."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> Any:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return numpy_helper.from_array((rng.normal(0, np.sqrt(2 / fan_in), shape)).astype(np.float32), name)

    inits = [
        weight("w1", 8, 3, 3, 3), numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
        weight("w2", 16, 8, 1, 1), numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "b2"),
        numpy_helper.from_array(rng.normal(0, 0.5, (16, 10)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.normal(0, 0.5, (16, 1)).astype(np.float32), "w4"),
        numpy_helper.from_array(np.array(float(TINY_SIZE), np.float32), "size"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"]),
        helper.make_node("Mul", ["c1", "s1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("GlobalAveragePool", ["a2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w3"], ["m3"]),
        helper.make_node("Sigmoid", ["m3"], ["p3"]),
        helper.make_node("Mul", ["p3", "size"], ["points"]),
        helper.make_node("MatMul", ["flat", "w4"], ["m4"]),
        helper.make_node("Sigmoid", ["m4"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, TINY_SIZE, TINY_SIZE])],
        [helper.make_tensor_value_info("points", TensorProto.FLOAT, [1, 10]), helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class _Reader(CalibrationDataReader):
    """onnxruntime calibration data: black and white frames (they pin the input range to exactly [0, 1]), then the photos."""

    def __init__(self, manifest: Path) -> None:
        frames = [np.zeros((1, 3, TINY_SIZE, TINY_SIZE), np.float32), np.ones((1, 3, TINY_SIZE, TINY_SIZE), np.float32)]
        self._inputs: Iterator[np.ndarray] = itertools.chain(frames, (x for _, x in iter_inputs(manifest, SPEC, "NCHW")))

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._inputs, None)
        return None if x is None else {"image": x}


def _quantize(float_path: Path, dest: Path, manifest: Path, fmt: str = "QDQ") -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(float_path), str(dest), _Reader(manifest), quant_format=getattr(QuantFormat, fmt), per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )
    return dest


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, manifest: Path) -> dict[str, Any]:
    """The tiny float ONNX, its QDQ int8 version (onnxruntime ``quantize_static``) and the dequantized float ONNX."""
    import onnx

    folder = tmp_path_factory.mktemp("qdq")
    onnx.save(_tiny_float_onnx(), str(folder / "float.onnx"))
    qdq = _quantize(folder / "float.onnx", folder / "qdq.onnx", manifest)
    info = dequantize_qdq_onnx(qdq, folder / "dequantized.onnx", opset=17)
    return {"float": folder / "float.onnx", "qdq": qdq, "dequantized": folder / "dequantized.onnx", "info": info}


def test_the_int8_file_is_a_qdq_graph_with_int8_weights(models: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(models["qdq"]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 5 and ops.count("DequantizeLinear") >= 9
    assert {i.data_type for i in model.graph.initializer} >= {onnx.TensorProto.INT8, onnx.TensorProto.INT32}


def test_float_model_has_no_quantized_parts(models: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(models["dequantized"]))
    assert not {n.op_type for n in model.graph.node} & QDQ_OPS
    assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT}
    ops = [n.op_type for n in model.graph.node if n.op_type != "Identity"]
    # The float model's ops. The ReLU after the second Conv, which onnxruntime's quantizer deleted
    # (its QuantizeLinear clamps at 0 instead), is back; any other Relu sits where the int8 model clamps at 0.
    assert Counter(op for op in ops if op != "Relu") == Counter(n.op_type for n in _tiny_float_onnx().graph.node if n.op_type != "Relu")
    conv2 = [n for n in model.graph.node if n.op_type == "Conv"][1]
    assert any(n.op_type == "Relu" and n.input[0] == conv2.output[0] for n in model.graph.node)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, TINY_SIZE, TINY_SIZE] and model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [o.name for o in model.graph.output] == ["points", "score"]


def test_info_states_the_real_input_range_and_output_steps(models: dict[str, Any]) -> None:
    import onnx
    from onnx import numpy_helper

    info: DequantizeInfo = models["info"]
    assert info.input_name == "image" and info.input_dtype == "float32"
    assert info.input_range == pytest.approx((0.0, 1.0), abs=1e-6)  # int8 with scale 1/255, zero point -128
    model = onnx.load(str(models["qdq"]))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    makers = {o: n for n in model.graph.node for o in n.output}
    for name, step in zip(("points", "score"), info.output_steps):
        assert makers[name].op_type == "DequantizeLinear" and step == pytest.approx(float(values[makers[name].input[1]]))


def test_float_model_matches_the_int8_model_within_the_step_criterion(models: dict[str, Any], manifest: Path) -> None:
    report = verify_dequantized(models["qdq"], models["dequantized"], manifest, SPEC, models["info"], mean_steps=3.0, max_samples=12)
    assert report["samples"] == 12
    for out in report["outputs"]:  # the int8 activation error: about a step on average
        assert out["ok"] and out["step_from"] == "int8 output"
        assert 0.0 < out["mean_steps"] < 3.0
    float_run, dequantized_run = runner_for(models["float"]), runner_for(models["dequantized"])
    for _, x in itertools.islice(iter_inputs(manifest, SPEC, "NHWC"), 4):  # and it is still the float model, up to weight rounding
        for ref, got in zip(float_run(x), dequantized_run(x)):
            assert np.abs(ref - got).max() < 0.02 * max(1.0, float(np.abs(ref).max()))


def test_weights_fold_to_what_onnxruntime_dequantizes(models: dict[str, Any]) -> None:
    """Every DequantizeLinear of an initializer (per-channel int8 weights, int32 biases) gives the same float32 bits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.convert.runners import ort_session

    model = onnx.load(str(models["qdq"]))
    initializers = {i.name for i in model.graph.initializer}
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers]
    assert any(helper.get_attribute_value(a) == 0 for n in weights for a in n.attribute if a.name == "axis")  # per-channel among them
    probe = helper.make_model(
        helper.make_graph(weights, "weights", [], [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in weights], list(model.graph.initializer)),
        opset_imports=model.opset_import,
    )
    expected = dict(zip((n.output[0] for n in weights), ort_session(probe.SerializeToString()).run(None, {})))
    folded = copy.deepcopy(model)
    remove_qdq(folded, models["qdq"])
    got = {i.name: numpy_helper.to_array(i) for i in folded.graph.initializer}
    assert all(np.array_equal(expected[name], got[name]) for name in expected)


def test_constants_and_outputs_of_a_hand_written_qdq_graph() -> None:
    """Q → DQ of a float constant folds to the constant on its int8 grid; a DQ graph output keeps its name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.convert.runners import ort_session

    c = np.array([[0.123, -0.456, 0.789, 1.5]], np.float32)
    w = np.array([[5, -7, 100, -128]], np.int8)
    w_scale = np.array([0.01, 0.02, 0.03, 0.04], np.float32)
    inits = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "s_in"), numpy_helper.from_array(np.array(-128, np.int8), "z_in"),
        numpy_helper.from_array(c, "c"), numpy_helper.from_array(np.array(0.05, np.float32), "s_c"), numpy_helper.from_array(np.array(3, np.int8), "z_c"),
        numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(w_scale, "s_w"), numpy_helper.from_array(np.zeros(4, np.int8), "z_w"),
        numpy_helper.from_array(np.array(0.02, np.float32), "s_out"), numpy_helper.from_array(np.array(0, np.int8), "z_out"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "s_in", "z_in"], ["x_dq"]),
        helper.make_node("QuantizeLinear", ["c", "s_c", "z_c"], ["c_q"]),
        helper.make_node("DequantizeLinear", ["c_q", "s_c", "z_c"], ["c_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "s_w", "z_w"], ["w"], axis=1),
        helper.make_node("Add", ["x_dq", "c_dq"], ["a"]),
        helper.make_node("Mul", ["a", "w"], ["m"]),
        helper.make_node("QuantizeLinear", ["m", "s_out", "z_out"], ["m_q"]),
        helper.make_node("DequantizeLinear", ["m_q", "s_out", "z_out"], ["y"]),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    float_info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y", "z")]
    model = helper.make_model(helper.make_graph(nodes, "hand", float_info[:1], float_info[1:], inits), opset_imports=[helper.make_opsetid("", 17)])
    remove_qdq(model, Path("hand.onnx"))
    onnx.checker.check_model(model)
    assert not {n.op_type for n in model.graph.node} & QDQ_OPS and [o.name for o in model.graph.output] == ["y", "z"]
    x = np.array([[0.1, 0.5, 0.9, 0.3]], np.float32)
    y, z = ort_session(model.SerializeToString()).run(None, {"x": x})
    c_grid = (np.clip(np.rint(c / np.float32(0.05)) + 3, -128, 127) - 3).astype(np.float32) * np.float32(0.05)
    expected = (x + c_grid) * (w.astype(np.float32) * w_scale)
    assert np.array_equal(y, expected) and np.array_equal(z, np.maximum(expected, 0))


def test_verification_fails_on_a_broken_conversion(tmp_path: Path, models: dict[str, Any], manifest: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(models["dequantized"]))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(init for init in model.graph.initializer if init.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    onnx.save(model, str(tmp_path / "negated.onnx"))
    with pytest.raises(PosezooError, match=r"negated\.onnx: output \d differs from the int8 .* output steps on average") as err:
        verify_dequantized(models["qdq"], tmp_path / "negated.onnx", manifest, SPEC, models["info"], mean_steps=3.0, max_samples=6)
    assert "\n" not in str(err.value)


def test_float_and_qoperator_models_are_refused(tmp_path: Path, models: dict[str, Any], manifest: Path) -> None:
    with pytest.raises(PosezooError, match=r"float\.onnx: has no DequantizeLinear nodes, .* use source format onnx") as err:
        dequantize_qdq_onnx(models["float"], tmp_path / "out.onnx", opset=17)
    assert "\n" not in str(err.value) and not (tmp_path / "out.onnx").exists()
    qoperator = _quantize(models["float"], tmp_path / "qop.onnx", manifest, fmt="QOperator")
    with pytest.raises(PosezooError, match=r"qop\.onnx: uses integer operators \(.*QLinearConv.*\), the QOperator format"):
        dequantize_qdq_onnx(qoperator, tmp_path / "out.onnx", opset=17)
    assert not (tmp_path / "out.onnx").exists()


def test_two_runs_give_identical_bytes(tmp_path: Path, models: dict[str, Any]) -> None:
    """Also in fresh processes with other hash seeds: no set order (here: of the two outputs) reaches the file."""
    import hashlib
    import os
    import subprocess
    import sys

    code = "import sys; from pathlib import Path; from pipeline.convert.dequantize_qdq import dequantize_qdq_onnx; dequantize_qdq_onnx(Path(sys.argv[1]), Path(sys.argv[2]), 17)"
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(models["qdq"]), str(tmp_path / f"{seed}.onnx")], check=True, capture_output=True, env=env)
    dequantize_qdq_onnx(models["qdq"], tmp_path / "here.onnx", opset=17)
    digests = {name: hashlib.sha256((tmp_path / f"{name}.onnx").read_bytes()).hexdigest() for name in ("1", "2", "3", "4", "here")}
    assert set(digests.values()) == {hashlib.sha256(models["dequantized"].read_bytes()).hexdigest()}, digests
