"""Dequantizing an int8 TFLite into a float ONNX, on tiny Keras models the tests quantize themselves."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.calibration.reader import iter_inputs
from pipeline.convert.dequantize import DequantizeInfo, dequantize_tflite_to_onnx, read_quantization, verify_dequantized
from pipeline.convert.runners import _dequantize, _quantize, runner_for
from pipeline.convert.tflite_to_onnx import float_input, fold_split_transposes
from pipeline.errors import PosezooError
from pipeline.registry import InputSpec

from tests.conftest import TINY_SIZE, build_tiny_tflite, photo_manifests

SPEC = InputSpec(height=TINY_SIZE, width=TINY_SIZE, channels=3, layout="NHWC", color="RGB", value_range=(0.0, 1.0), resize="stretch")
IO_TYPES = ["uint8", "int8", "float32"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 12, 6) / "manifest.json"


@pytest.fixture(scope="module")
def keras_model() -> Any:
    """A tiny conv net with a channel split (a TFLite SPLIT), two outputs, keypoints in input pixels."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((TINY_SIZE, TINY_SIZE, 3), batch_size=1, name="image")
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    # A Lambda works under Keras 3 and under tf_keras (onnx2tf switches TF to legacy Keras in-process).
    a, b = tf.keras.layers.Lambda(lambda t: tf.split(t, 2, axis=-1))(x)
    a = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(a)
    x = tf.keras.layers.Conv2D(16, 1, activation="relu")(tf.keras.layers.Concatenate()([a, b]))
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    points = tf.keras.layers.Dense(10, activation="sigmoid")(x) * float(TINY_SIZE)
    score = tf.keras.layers.Dense(1, activation="sigmoid")(x)
    return tf.keras.Model(inp, [points, score])


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory: pytest.TempPathFactory, keras_model: Any, manifest: Path) -> dict[str, Path]:
    """Full-integer TFLite files of ``keras_model`` with uint8, int8 and float input/output tensors."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("int8")

    def representative():  # type: ignore[no-untyped-def]
        yield [np.zeros((1, TINY_SIZE, TINY_SIZE, 3), np.float32)]  # black and white frames pin the
        yield [np.ones((1, TINY_SIZE, TINY_SIZE, 3), np.float32)]  # input range to exactly [0, 1]
        for _, x in iter_inputs(manifest, SPEC, "NHWC"):
            yield [x]

    files = {}
    for io_type in IO_TYPES:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = getattr(tf, io_type)
        files[io_type] = folder / f"tiny_{io_type}.tflite"
        files[io_type].write_bytes(converter.convert())
    return files


@pytest.fixture(scope="module")
def dequantized(tmp_path_factory: pytest.TempPathFactory, int8_models: dict[str, Path]) -> dict[str, tuple[Path, DequantizeInfo]]:
    folder = tmp_path_factory.mktemp("float")
    return {k: (folder / f"{k}.onnx", dequantize_tflite_to_onnx(src, folder / f"{k}.onnx", opset=17)) for k, src in int8_models.items()}


@pytest.mark.parametrize("io_type", IO_TYPES)
def test_info_states_the_real_input_range_and_output_steps(int8_models: dict[str, Path], dequantized: dict[str, tuple[Path, DequantizeInfo]], io_type: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    _, info = dequantized[io_type]
    assert info.input_dtype == io_type
    assert info.input_range == pytest.approx((0.0, 1.0), abs=1e-6)
    interpreter = Interpreter(model_path=str(int8_models[io_type]))
    if io_type != "float32":
        assert (info.input_scale, info.input_zero_point) == pytest.approx(interpreter.get_input_details()[0]["quantization"])
        assert info.output_steps == pytest.approx([d["quantization"][0] for d in interpreter.get_output_details()])
    else:  # float outputs behind a final DEQUANTIZE still have the step of the int8 tensor it reads
        assert info.input_scale is None and all(step is not None and step > 0 for step in info.output_steps)
    assert read_quantization(int8_models[io_type]) == info


@pytest.mark.parametrize("io_type", IO_TYPES)
def test_onnx_is_float_nchw_without_quantized_parts(dequantized: dict[str, tuple[Path, DequantizeInfo]], io_type: str) -> None:
    import onnx

    model = onnx.load(str(dequantized[io_type][0]))
    float_type = onnx.TensorProto.FLOAT
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, TINY_SIZE, TINY_SIZE]
    assert {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]} == {float_type}
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear", "Cast"}
    assert {init.data_type for init in model.graph.initializer} <= {float_type, onnx.TensorProto.INT64}
    assert "Split" in ops and "Transpose" not in ops  # the channel split's layout transposes were folded
    assert all(n.name == f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node))


@pytest.mark.parametrize("io_type", IO_TYPES)
def test_onnx_matches_the_int8_model_and_the_float_model(
    int8_models: dict[str, Path], dequantized: dict[str, tuple[Path, DequantizeInfo]], keras_model: Any, manifest: Path, io_type: str
) -> None:
    onnx_path, info = dequantized[io_type]
    report = verify_dequantized(int8_models[io_type], onnx_path, manifest, SPEC, info, mean_steps=1.0, max_samples=12)
    assert report["samples"] == 12
    for out in report["outputs"]:  # int8 activation error: a fraction of a step on average, a few at worst
        assert out["ok"] and out["step_from"] == "int8 output"
        assert out["mean_steps"] < 1.0 and out["max_steps"] < 4.0
    run = runner_for(onnx_path)
    for _, x in itertools.islice(iter_inputs(manifest, SPEC, "NHWC"), 4):  # and it is still the float model
        points, score = (np.asarray(y) for y in keras_model(x))
        onnx_outputs = sorted(run(x), key=lambda y: y.size)  # subgraph output order is not Keras order
        assert np.abs(onnx_outputs[1] - points).max() < 0.02 * TINY_SIZE
        assert np.abs(onnx_outputs[0] - score).max() < 0.02


def test_outputs_without_a_step_are_judged_in_8_bit_steps_of_their_range(
    int8_models: dict[str, Path], dequantized: dict[str, tuple[Path, DequantizeInfo]], manifest: Path
) -> None:
    onnx_path, info = dequantized["float32"]
    report = verify_dequantized(int8_models["float32"], onnx_path, manifest, SPEC, dataclasses.replace(info, output_steps=(None, None)), 1.0, 6)
    points = max(report["outputs"], key=lambda o: o["step"])  # keypoints span up to 32 px, the score up to 1
    assert all(o["step_from"] == "reference range with 0 / 255" and o["ok"] for o in report["outputs"])
    assert 0.02 < points["step"] <= TINY_SIZE / 255 and min(o["step"] for o in report["outputs"]) > 1e-3


def test_unexpected_input_structure_is_refused(int8_models: dict[str, Path], dequantized: dict[str, tuple[Path, DequantizeInfo]]) -> None:
    import onnx

    onnx_path, _ = dequantized["float32"]  # already float: no Cast → Sub → Mul chain after the input
    model = onnx.load(str(onnx_path))
    with pytest.raises(PosezooError, match=r"does not feed the expected Cast → Sub\(zero point\) → Mul\(scale\) \(at Cast: found Conv"):
        float_input(model, int8_models["float32"], 1 / 255, 0)


def test_two_runs_give_identical_bytes(tmp_path: Path, int8_models: dict[str, Path]) -> None:
    for name in ("a.onnx", "b.onnx"):
        dequantize_tflite_to_onnx(int8_models["uint8"], tmp_path / name, opset=17)
    assert hashlib.sha256((tmp_path / "a.onnx").read_bytes()).digest() == hashlib.sha256((tmp_path / "b.onnx").read_bytes()).digest()


def test_verification_fails_on_broken_conversions(tmp_path: Path, int8_models: dict[str, Path], dequantized: dict[str, tuple[Path, DequantizeInfo]], manifest: Path) -> None:
    import onnx
    from onnx import numpy_helper

    onnx_path, info = dequantized["uint8"]
    model = onnx.load(str(onnx_path))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(init for init in model.graph.initializer if init.name == conv.input[1])
    broken = copy.deepcopy(model)
    broken_weight = next(init for init in broken.graph.initializer if init.name == conv.input[1])
    broken_weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    onnx.save(broken, str(tmp_path / "negated.onnx"))
    with pytest.raises(PosezooError, match=r"negated\.onnx: output \d differs from the int8 .* output steps on average") as err:
        verify_dequantized(int8_models["uint8"], tmp_path / "negated.onnx", manifest, SPEC, info, mean_steps=1.0, max_samples=6)
    assert "\n" not in str(err.value)
    pixels = InputSpec(**{**SPEC.__dict__, "value_range": (0.0, 255.0)})  # a registry range in pixels for a [0, 1] input
    with pytest.raises(PosezooError, match=r"represents values in \[0, 1\] but .* set the registry's input\.range to \[0, 1\]"):
        verify_dequantized(int8_models["uint8"], onnx_path, manifest, pixels, info, mean_steps=1.0, max_samples=6)


def test_truncated_int8_model_is_rejected(tmp_path: Path, int8_models: dict[str, Path]) -> None:
    cut = tmp_path / "cut.tflite"
    data = int8_models["int8"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PosezooError, match=r"cut\.tflite: truncated or corrupt TFLite file") as err:
        dequantize_tflite_to_onnx(cut, tmp_path / "out.onnx", opset=17)
    assert "\n" not in str(err.value) and not (tmp_path / "out.onnx").exists()


def test_float_model_is_rejected(tmp_path: Path) -> None:
    float_model = build_tiny_tflite(tmp_path / "float.tflite")
    with pytest.raises(PosezooError, match=r"float\.tflite: has no quantized int8 tensors, .* convert it as a float TFLite") as err:
        dequantize_tflite_to_onnx(float_model, tmp_path / "out.onnx", opset=17)
    assert "\n" not in str(err.value) and not (tmp_path / "out.onnx").exists()


def test_integer_tensor_without_quantization_is_cast_not_divided() -> None:
    pixels = {"dtype": np.uint8, "quantization": (0.0, 0)}  # MoveNet's int8 release: plain uint8 pixels
    x = np.array([-3.0, 0.4, 127.6, 300.0], np.float32)
    with np.errstate(all="raise"):
        assert _quantize(x, pixels).tolist() == [0, 0, 128, 255]
    assert _dequantize(np.array([7], np.uint8), pixels).tolist() == [7.0]
    scaled = {"dtype": np.uint8, "quantization": (1 / 255, 0)}
    assert _quantize(np.array([0.0, 0.6, 1.0], np.float32), scaled).tolist() == [0, 153, 255]


def test_split_transposes_fold_into_one_split() -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Split", ["x_nhwc"], ["a", "b"], axis=3, num_outputs=2),
        helper.make_node("Transpose", ["a"], ["a_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Transpose", ["b"], ["b_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["a_nchw", "b_nchw"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(0).normal(size=(1, 4, 2, 3)).astype(np.float32)

    def run(m: onnx.ModelProto) -> np.ndarray:
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    expected = run(model)
    assert fold_split_transposes(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Split", "Sub"]
    np.testing.assert_array_equal(run(model), expected)
