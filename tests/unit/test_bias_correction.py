"""Empirical bias correction on tiny ONNX graphs built here, checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.quant_utils import quantize_data

from pipeline.calibration.reader import iter_inputs
from pipeline.optimize.bias_correction import bias_correct_onnx
from pipeline.optimize.graph import fake_quantize
from pipeline.registry import InputSpec

from tests.conftest import photo_manifests

SIZE = 12
SPEC = InputSpec(height=SIZE, width=SIZE, channels=3, layout="NCHW", color="RGB", value_range=(0.0, 1.0), resize="stretch")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 10, 6)


def images(manifest: Path) -> np.ndarray:
    return np.concatenate([x for _, x in iter_inputs(manifest, SPEC, "NCHW")])


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stride-1, zero-padded ('same') 2-D convolution of a batch, in plain numpy (float64)."""
    kh, kw = w.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    h, wd = x.shape[2:]
    y = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("oc,nchw->nohw", w[:, :, i, j], xp[:, :, i : i + h, j : j + wd])
    return y + b.reshape(1, -1, 1, 1)


def one_conv_model(path: Path, w: np.ndarray, b: np.ndarray) -> Path:
    inits = [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b")]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=list(w.shape[2:]), pads=[w.shape[2] // 2] * 4)
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def initializer(path: Path, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name == name)


def test_fake_quantize_matches_onnxruntime_int8_weights() -> None:
    w = np.random.default_rng(0).normal(size=(5, 4, 3, 3)).astype(np.float32) * np.float32(0.07)
    zero, scale, q = quantize_data(w.ravel(), TensorProto.INT8, symmetric=True)
    assert q.min() >= -127 and float(zero) == 0
    np.testing.assert_array_equal(fake_quantize(w, None), (q.astype(np.float32) * scale).reshape(w.shape))
    for c in range(w.shape[0]):
        _, scale, q = quantize_data(w[c].ravel(), TensorProto.INT8, symmetric=True)
        np.testing.assert_array_equal(fake_quantize(w, 0)[c], (q.astype(np.float32) * scale).reshape(w[c].shape))


@pytest.mark.parametrize("per_channel", [False, True])
def test_correction_cancels_the_mean_error_of_a_quantized_conv(tmp_path: Path, manifests: Path, per_channel: bool) -> None:
    rng = np.random.default_rng(1)
    # output channels spanning 3 decades: per-tensor int8 leaves the small ones a few levels
    w = rng.normal(size=(6, 3, 3, 3)) * (10.0 ** np.linspace(-1.5, 1.5, 6)).reshape(-1, 1, 1, 1) + 0.02
    b = rng.normal(size=6)
    src = one_conv_model(tmp_path / "src.onnx", w, b)
    report = bias_correct_onnx(src, tmp_path / "bc.onnx", manifests / "manifest.json", SPEC, per_channel)
    b_new = initializer(tmp_path / "bc.onnx", "b").astype(np.float64)
    np.testing.assert_array_equal(initializer(tmp_path / "bc.onnx", "w"), initializer(src, "w"))  # weights stay float
    assert report["layers_corrected"] == 1 and report["rounds"] == 1

    w32 = initializer(src, "w")
    wq = fake_quantize(w32, 0 if per_channel else None).astype(np.float64)
    for split, must_vanish in (("manifest", True), ("holdout", False)):
        x = images(manifests / f"{split}.json")
        ref = conv2d(x, w32.astype(np.float64), b)
        before = (conv2d(x, wq, b) - ref).mean(axis=(0, 2, 3))  # per-channel mean output error
        after = (conv2d(x, wq, b_new) - ref).mean(axis=(0, 2, 3))
        if must_vanish:  # the calibration images define the expectation that is removed
            assert np.max(np.abs(after)) < 1e-4 * np.max(np.abs(before)) + 1e-6
        assert np.sum(np.abs(after)) < 0.5 * np.sum(np.abs(before))
    quantized = report["weight_quantized_outputs"]
    assert quantized["after"][0]["mean_abs_channel_bias"] < 1e-3 * quantized["before"][0]["mean_abs_channel_bias"]
    assert quantized["after"][0]["mean_abs_diff"] < quantized["before"][0]["mean_abs_diff"]


@pytest.mark.parametrize("per_channel", [False, True])
def test_exactly_representable_weights_leave_the_bias_alone(tmp_path: Path, manifests: Path, per_channel: bool) -> None:
    rng = np.random.default_rng(2)
    k = rng.integers(-127, 128, size=(4, 3, 3, 3))
    k[:, 0, 0, 0] = 127  # every channel (and the tensor) reaches ±127: scale 2^-7 exactly
    src = one_conv_model(tmp_path / "src.onnx", k * 2.0**-7, rng.normal(size=4))
    report = bias_correct_onnx(src, tmp_path / "bc.onnx", manifests / "manifest.json", SPEC, per_channel)
    np.testing.assert_array_equal(initializer(tmp_path / "bc.onnx", "b"), initializer(src, "b"))
    assert report["layers"][0]["max_abs_shift"] == 0.0


def test_sequential_chain_with_depthwise_gemm_and_matmul(tmp_path: Path, manifests: Path) -> None:
    rng = np.random.default_rng(3)

    def init(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value.astype(np.float32), name)

    spread = (10.0 ** np.linspace(-1.5, 1.0, 8)).reshape(-1, 1, 1, 1)
    inits = [
        init("w0", rng.normal(size=(8, 3, 3, 3)) * spread),
        init("zero", np.zeros(8)),  # tf2onnx shares identical biases between layers
        init("dw", rng.normal(size=(8, 1, 3, 3)) * spread),
        init("gw", rng.normal(size=(5, 8)) * 0.3),
        init("mw", rng.normal(size=(5, 3)) * 0.5),
        init("mb", np.zeros(3)),
        init("lo", np.array(0.0)),
        init("hi", np.array(6.0)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "zero"], ["c0"], name="c0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c0", "lo", "hi"], ["r0"], name="r0"),
        helper.make_node("Conv", ["r0", "dw", "zero"], ["c1"], name="c1", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "gw"], ["g"], name="g", transB=1),  # no bias: one is added
        helper.make_node("MatMul", ["g", "mw"], ["m"], name="m"),
        helper.make_node("Add", ["m", "mb"], ["y"], name="add"),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    src = tmp_path / "src.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    report = bias_correct_onnx(src, tmp_path / "bc.onnx", manifests / "manifest.json", SPEC, False)
    again = bias_correct_onnx(src, tmp_path / "again.onnx", manifests / "manifest.json", SPEC, False)

    assert report["layers_corrected"] == 4 and report["skipped"] == {} and report["rounds"] == 4
    assert (tmp_path / "bc.onnx").read_bytes() == (tmp_path / "again.onnx").read_bytes() and report == again
    model = onnx.load(str(tmp_path / "bc.onnx"))
    c0, c1, gemm = (n for n in model.graph.node if n.name in ("c0", "c1", "g"))
    assert c0.input[2] != c1.input[2] and len(gemm.input) == 3  # the shared bias was split, the Gemm got one
    # the last layer absorbs what is left of the output's mean shift on the calibration images
    before, after = report["weight_quantized_outputs"]["before"][0], report["weight_quantized_outputs"]["after"][0]
    assert after["mean_abs_channel_bias"] < 1e-4 * before["mean_abs_channel_bias"] and after["mean_abs_diff"] < before["mean_abs_diff"]
    independent = bias_correct_onnx(src, tmp_path / "ind.onnx", manifests / "manifest.json", SPEC, False, sequential=False)
    assert independent["rounds"] == 1
    assert independent["weight_quantized_outputs"]["after"][0]["mean_abs_channel_bias"] > after["mean_abs_channel_bias"]
