"""OpenVINO IR → ONNX on tiny IRs built with OpenVINO's opset API: every mapped op, round-tripped.

Each graph is saved as an IR (FP32, and FP16-compressed where it matters), converted, and run
twice on the same random input: by OpenVINO's CPU plugin (f32 precision hint, the runner
``posezoo`` uses for IRs) and by onnxruntime on the ONNX. They must agree to ~1e-5 of the output
range. Attribute variants OpenVINO and ONNX spell differently (pads, auto_pad, pool rounding,
exclude-pad, StridedSlice masks, Interpolate modes) are parametrized.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
import onnx  # noqa: E402
import openvino.opset13 as ops  # noqa: E402
import openvino.opset14 as ops14  # noqa: E402

from pipeline.convert.openvino_to_onnx import openvino_to_onnx  # noqa: E402
from pipeline.convert.runners import openvino_runner, runner_for  # noqa: E402
from pipeline.errors import PosezooError  # noqa: E402

RTOL = 1e-5
F32 = np.float32


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> Any:
    return ops.constant((rng.standard_normal(shape) * scale).astype(F32))


def _save(model: Any, folder: Path, fp16: bool = False) -> Path:
    xml = folder / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=fp16)
    return xml


def _round_trip(model: Any, folder: Path, fp16: bool = False, seed: int = 0) -> tuple[dict[str, Any], Path]:
    """Save, convert, run both on one random NHWC input; assert every output agrees. Returns (info, onnx path)."""
    xml = _save(model, folder, fp16)
    onnx_path = folder / "model.onnx"
    info = openvino_to_onnx(xml, onnx_path, 17)
    shape = info["input"]["shape"]
    nhwc = [shape[0], *shape[2:], shape[1]] if info["input"]["layout"] == "NCHW" else shape
    x = np.random.default_rng(seed).uniform(-2, 2, nhwc).astype(F32)
    ref, got = runner_for(xml)(x), runner_for(onnx_path)(x)
    assert len(ref) == len(got) == len(model.outputs)
    for i, (r, g) in enumerate(zip(ref, got)):
        assert r.shape == g.shape, f"output {i}: {r.shape} vs {g.shape}"
        tol = RTOL * max(1.0, float(np.abs(r).max()))
        assert float(np.abs(r - g).max()) <= tol, f"output {i} differs by {np.abs(r - g).max():.3g} (tolerance {tol:.3g})"
    return info, onnx_path


# --- graphs --------------------------------------------------------------------------------------


def conv_net() -> Any:
    """Conv + bias, PReLU (1-D slope), depthwise GroupConv (same_upper), pools, dense head: two outputs."""
    rng = np.random.default_rng(1)
    x = ops.parameter([1, 3, 20, 20], F32, name="image")
    y = ops.convolution(x, _w(rng, 8, 3, 3, 3), [2, 2], [1, 0], [0, 1], [1, 1])
    y = ops.add(y, _w(rng, 1, 8, 1, 1))
    y = ops.prelu(y, ops.constant(rng.uniform(0.05, 0.3, 8).astype(F32)))
    y = ops.group_convolution(y, _w(rng, 8, 1, 1, 3, 3), [1, 1], [0, 0], [0, 0], [1, 1], auto_pad="same_upper")
    y = ops.add(_w(rng, 8, 1, 1), y)  # bias on the left, rank 3
    y = ops.clamp(y, 0.0, 6.0)
    y = ops.hswish(ops.convolution(y, _w(rng, 12, 8, 3, 3), [1, 1], [2, 2], [2, 2], [2, 2]))
    y = ops.max_pool(y, [2, 2], [1, 1], [0, 0], [0, 0], [3, 3], rounding_type="ceil").output(0)
    a = ops.avg_pool(y, [1, 1], [1, 1], [1, 1], [3, 3], exclude_pad=True, rounding_type="ceil")
    b = ops.avg_pool(ops.relu(y), [1, 1], [1, 1], [0, 0], [2, 2], exclude_pad=False)
    y = ops.concat([ops.sigmoid(a), ops.hsigmoid(b)], 1)
    pooled = ops.reduce_mean(y, ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    head = ops.matmul(pooled, _w(rng, 10, 24), False, True)
    points = ops.reshape(ops.add(head, _w(rng, 10)), ops.constant(np.array([1, 5, 2], np.int64)), False)
    score = ops.sigmoid(ops.matmul(pooled, _w(rng, 24, 1), False, False))
    return ov.Model([ops.result(points), ops.result(score)], [x], "conv_net")


def shape_net() -> Any:
    """Layout and shape ops on a (1, 6, 4, 10) tensor: transpose, split, slices, gather, reshape via ShapeOf."""
    rng = np.random.default_rng(2)
    x = ops.parameter([1, 6, 4, 10], F32, name="x")
    t = ops.transpose(x, ops.constant(np.array([0, 2, 3, 1], np.int64)))  # (1, 4, 10, 6)
    a, b, c = ops.split(t, ops.constant(np.int64(3)), 3).outputs()  # (1, 4, 10, 2) each
    p, q = ops.variadic_split(t, ops.constant(np.int64(2)), ops.constant(np.array([3, -1], np.int64))).outputs()
    s = ops.strided_slice(p, [0, 1, -1, 0], [1, 4, 0, 6], [1, 2, -2, 1], begin_mask=[1, 0, 0, 1], end_mask=[1, 0, 1, 1])
    sl = ops.slice(q, ops.constant(np.array([1, 0], np.int64)), ops.constant(np.array([3, 7], np.int64)),
                   ops.constant(np.array([1, 2], np.int64)), ops.constant(np.array([1, 3], np.int64)))
    g = ops.gather(c, ops.constant(np.array([2, 0, -1], np.int64)), ops.constant(np.int64(2)))  # (1, 4, 3, 2)
    mixed = ops.maximum(ops.minimum(ops.subtract(a, b), _w(rng, 2)), ops.divide(ops.multiply(b, _w(rng, 10, 1)), ops.constant(F32(1.7))))
    sq = ops.squeeze(ops.unsqueeze(ops.tanh(mixed), ops.constant(np.array([0, 3], np.int64))), ops.constant(np.array([0], np.int64)))
    shaped = ops.reshape(ops.softmax(sq, -1), ops.shape_of(ops.unsqueeze(a, ops.constant(np.array([3], np.int64)))), False)
    return ov.Model([ops.result(s), ops.result(sl), ops.result(g), ops.result(shaped)], [x], "shape_net")


def _pool_net(kind: str, auto_pad: str, rounding: str, exclude_pad: bool) -> Any:
    x = ops.parameter([1, 3, 11, 13], F32, name="x")
    pads = ([1, 0], [0, 1]) if auto_pad == "explicit" else ([0, 0], [0, 0])
    if kind == "max":
        y = ops14.max_pool(x, [2, 3], [1, 1], *pads, [3, 3], rounding_type=rounding, auto_pad=auto_pad).output(0)
    else:
        y = ops14.avg_pool(x, [2, 3], *pads, [3, 3], exclude_pad=exclude_pad, rounding_type=rounding, auto_pad=auto_pad)
    return ov.Model([ops.result(y)], [x], "pool")


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_conv_net_round_trips(tmp_path: Path, fp16: bool) -> None:
    info, onnx_path = _round_trip(conv_net(), tmp_path, fp16)
    assert info["input"] == {"name": "image", "shape": [1, 3, 20, 20], "layout": "NCHW"}
    seen = set(info["op_types"])
    assert {"Convolution", "GroupConvolution", "PRelu", "Clamp", "HSwish", "HSigmoid", "MaxPool", "AvgPool", "MatMul", "ReduceMean"} <= seen
    graph = onnx.load(str(onnx_path)).graph
    kinds = Counter(n.op_type for n in graph.node)
    # Both convolution biases went into Conv's bias input; the dense bias stays an Add.
    assert kinds["Conv"] == 3 and kinds["Add"] == 1
    assert sorted(len(n.input) for n in graph.node if n.op_type == "Conv") == [2, 3, 3]
    assert all(i.data_type == onnx.TensorProto.FLOAT or i.data_type == onnx.TensorProto.INT64 for i in graph.initializer)
    if fp16:  # the FP16 IR decompresses its weights with Convert ops, folded into f32 initializers
        assert info["op_types"].get("Convert", 0) >= 6 and "Cast" not in kinds


def test_shape_ops_round_trip(tmp_path: Path) -> None:
    info, onnx_path = _round_trip(shape_net(), tmp_path)
    assert {"Transpose", "Split", "VariadicSplit", "StridedSlice", "Slice", "Gather", "ShapeOf", "Squeeze", "Unsqueeze", "Softmax"} <= set(info["op_types"])
    assert "Shape" not in {n.op_type for n in onnx.load(str(onnx_path)).graph.node}  # ShapeOf folded from the static shape


@pytest.mark.parametrize("kind,auto_pad,rounding,exclude_pad", [
    ("max", "explicit", "floor", True), ("max", "explicit", "ceil", True), ("max", "explicit", "ceil_torch", True),
    ("max", "same_upper", "floor", True), ("max", "same_lower", "floor", True), ("max", "valid", "ceil", True),
    ("avg", "explicit", "floor", True), ("avg", "explicit", "floor", False), ("avg", "explicit", "ceil", True),
    ("avg", "explicit", "ceil_torch", True), ("avg", "same_upper", "floor", True), ("avg", "same_lower", "floor", False),
])
def test_pool_padding_and_rounding(tmp_path: Path, kind: str, auto_pad: str, rounding: str, exclude_pad: bool) -> None:
    _round_trip(_pool_net(kind, auto_pad, rounding, exclude_pad), tmp_path)


@pytest.mark.parametrize("begin,end,stride,masks", [
    ([0, 0, 1, 2], [1, 3, 9, 5], [1, 1, 2, 1], {}),
    ([0, 2, -1, 0], [1, 0, 0, 4], [1, -1, -3, 2], {"begin_mask": [1, 0, 0, 1], "end_mask": [1, 1, 0, 0]}),
    ([0, 1, 0], [0, 2, 0], [1, 1, 1], {"ellipsis_mask": [0, 0, 1], "shrink_axis_mask": [1, 1, 0]}),
    ([0, 0, 0, 3], [0, 0, 0, 4], [1, 1, 1, 1], {"new_axis_mask": [0, 1, 0, 0], "begin_mask": [1, 0, 1, 0], "end_mask": [1, 0, 1, 0]}),
    ([0, -1], [0, 0], [1, 1], {"ellipsis_mask": [1, 0], "shrink_axis_mask": [0, 1]}),
])
def test_strided_slice_masks(tmp_path: Path, begin: list[int], end: list[int], stride: list[int], masks: dict[str, list[int]]) -> None:
    x = ops.parameter([1, 4, 10, 6], F32, name="x")
    full = {k: masks.get(k, [0] * len(begin)) for k in ("begin_mask", "end_mask", "new_axis_mask", "shrink_axis_mask", "ellipsis_mask")}
    y = ops.strided_slice(x, begin, end, stride, **full)
    _round_trip(ov.Model([ops.result(ops.relu(y))], [x], "slice"), tmp_path)


@pytest.mark.parametrize("mode,transform,nearest,calc", [
    ("nearest", "asymmetric", "floor", "sizes"),
    ("nearest", "half_pixel", "round_prefer_floor", "sizes"),
    ("nearest", "tf_half_pixel_for_nn", "ceil", "sizes"),
    ("linear_onnx", "half_pixel", "round_prefer_floor", "sizes"),
    ("linear_onnx", "align_corners", "round_prefer_floor", "sizes"),
    ("linear_onnx", "asymmetric", "round_prefer_floor", "scales"),
    ("linear_onnx", "pytorch_half_pixel", "round_prefer_floor", "scales"),
    ("linear", "half_pixel", "round_prefer_floor", "sizes"),
    ("cubic", "half_pixel", "round_prefer_floor", "sizes"),
])
def test_interpolate_modes(tmp_path: Path, mode: str, transform: str, nearest: str, calc: str) -> None:
    x = ops.parameter([1, 3, 6, 5], F32, name="x")
    target = ops.constant(np.array([13, 9], np.int64)) if calc == "sizes" else ops.constant(np.array([2.5, 1.5], F32))
    y = ops14.interpolate(x, target, mode, calc, coordinate_transformation_mode=transform, nearest_mode=nearest,
                          axes=ops.constant(np.array([2, 3], np.int64)))
    _round_trip(ov.Model([ops.result(y)], [x], "resize"), tmp_path)


def _interpolate4(calc: str) -> Any:
    """Interpolate-4 (sizes and scales as separate inputs, OMZ 2021-era IRs) through OpenVINO's node factory."""
    from openvino.utils.node_factory import NodeFactory

    x = ops.parameter([1, 3, 6, 5], F32, name="x")
    inputs = [x, ops.constant(np.array([13, 9], np.int64)), ops.constant(np.array([2.5, 1.5], F32)), ops.constant(np.array([2, 3], np.int64))]
    attrs = {"mode": "linear_onnx", "shape_calculation_mode": calc, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor",
             "antialias": False, "pads_begin": [0, 0, 0, 0], "pads_end": [0, 0, 0, 0], "cube_coeff": -0.75}
    y = NodeFactory("opset4").create("Interpolate", inputs, attrs)
    assert y.get_type_info().version_id == "opset4"
    return ov.Model([ops.result(y)], [x], "resize4")


@pytest.mark.parametrize("calc", ["sizes", "scales"])
def test_interpolate4(tmp_path: Path, calc: str) -> None:
    _round_trip(_interpolate4(calc), tmp_path)


def test_shape_lost_behind_compressed_scales_is_refused(tmp_path: Path) -> None:
    """FP16 compression puts the scales behind a Convert, and OpenVINO's shape inference then gives up."""
    xml = _save(_interpolate4("scales"), tmp_path, fp16=True)
    with pytest.raises(PosezooError, match=r"Interpolate '.*' has no static output shape \(\[1,3,\?,\?\]\)"):
        openvino_to_onnx(xml, tmp_path / "model.onnx", 17)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
def test_pad_modes(tmp_path: Path, mode: str) -> None:
    x = ops.parameter([1, 3, 7, 7], F32, name="x")
    y = ops.pad(x, ops.constant(np.array([0, 0, 1, 2], np.int64)), ops.constant(np.array([0, 1, 2, 0], np.int64)), mode,
                ops.constant(F32(0.25)) if mode == "constant" else None)
    _round_trip(ov.Model([ops.result(y)], [x], "pad"), tmp_path)


def test_outputs_keep_result_order_and_repeated_tensors(tmp_path: Path) -> None:
    """Results in IR order, even when two Results share a tensor or one reads the input itself."""
    x = ops.parameter([1, 3, 4, 5], F32, name="x")
    r = ops.relu(x)
    model = ov.Model([ops.result(ops.sigmoid(x)), ops.result(r), ops.result(x), ops.result(r)], [x], "order")
    _, onnx_path = _round_trip(model, tmp_path)
    graph = onnx.load(str(onnx_path)).graph
    assert [len(o.type.tensor_type.shape.dim) for o in graph.output] == [4, 4, 4, 4]
    x0 = np.random.default_rng(3).uniform(-1, 1, (1, 4, 5, 3)).astype(F32)  # NHWC view of (1, 3, 4, 5)
    got = runner_for(onnx_path)(x0)
    nchw = x0.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got[0], 1 / (1 + np.exp(-nchw)), rtol=1e-6)
    np.testing.assert_array_equal(got[1], np.maximum(nchw, 0))
    np.testing.assert_array_equal(got[2], nchw)
    np.testing.assert_array_equal(got[3], got[1])


def test_nhwc_ir_keeps_its_layout(tmp_path: Path) -> None:
    """An IR converted from TFLite takes NHWC; the ONNX keeps that input, and both runners feed it as is."""
    rng = np.random.default_rng(4)
    x = ops.parameter([1, 16, 16, 3], F32, name="input_1")
    y = ops.transpose(x, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    y = ops.convolution(y, _w(rng, 4, 3, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1])
    info, _ = _round_trip(ov.Model([ops.result(y)], [x], "nhwc"), tmp_path)
    assert info["input"]["layout"] == "NHWC"


# --- errors --------------------------------------------------------------------------------------


def test_unmapped_ops_are_listed_with_counts(tmp_path: Path) -> None:
    x = ops.parameter([1, 3, 4, 4], F32, name="x")
    y = ops.erf(ops.floor(ops.erf(ops.relu(x))))
    y = ops.add(y, ops.erf(x))  # every unmapped op counts, also downstream of another; mapped ones (Add) do not
    xml = _save(ov.Model([ops.result(ops.sigmoid(y))], [x], "bad"), tmp_path)
    with pytest.raises(PosezooError) as err:
        openvino_to_onnx(xml, tmp_path / "model.onnx", 17)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{xml}: 2 op types have no ONNX mapping: Erf ×3, Floor ×1;")
    assert not (tmp_path / "model.onnx").exists()


def test_unmappable_attribute_names_the_reason(tmp_path: Path) -> None:
    x = ops.parameter([1, 3, 7, 7], F32, name="x")
    y = ops.pad(x, ops.constant(np.array([0, 0, 1, 1], np.int64)), ops.constant(np.array([0, 0, 1, 1], np.int64)), "symmetric")
    xml = _save(ov.Model([ops.result(y)], [x], "sym"), tmp_path)
    with pytest.raises(PosezooError, match=r"1 op type has no ONNX mapping: Pad ×1 \(Pad mode=symmetric\)"):
        openvino_to_onnx(xml, tmp_path / "model.onnx", 17)


@pytest.mark.parametrize("damage", ["truncated_bin", "missing_bin", "bad_xml"])
def test_broken_ir_is_one_line_error(tmp_path: Path, damage: str) -> None:
    xml = _save(conv_net(), tmp_path)
    bin_path = xml.with_suffix(".bin")
    if damage == "truncated_bin":
        bin_path.write_bytes(bin_path.read_bytes()[:100])
    elif damage == "missing_bin":
        bin_path.unlink()
    else:
        xml.write_text(xml.read_text()[:500])
    for call in (lambda: openvino_to_onnx(xml, tmp_path / "model.onnx", 17), lambda: openvino_runner(xml)):
        with pytest.raises(PosezooError) as err:
            call()
        assert str(err.value).startswith(f"{xml}: OpenVINO cannot read this IR (") and "\n" not in str(err.value)


def test_dynamic_input_is_refused(tmp_path: Path) -> None:
    x = ops.parameter([-1, 3, 8, 8], F32, name="x")
    xml = _save(ov.Model([ops.result(ops.relu(x))], [x], "dyn"), tmp_path)
    with pytest.raises(PosezooError, match="dynamic shape"):
        openvino_to_onnx(xml, tmp_path / "model.onnx", 17)


def test_runner_dispatches_xml_and_runs_f32(tmp_path: Path) -> None:
    """``runner_for`` picks the OpenVINO runner for .xml; outputs are float32 in Result order."""
    xml = _save(conv_net(), tmp_path)
    x = np.random.default_rng(5).uniform(0, 1, (1, 20, 20, 3)).astype(F32)
    out = runner_for(xml)(x)
    assert [o.shape for o in out] == [(1, 5, 2), (1, 1)] and all(o.dtype == np.float32 for o in out)
    np.testing.assert_array_equal(out[0], runner_for(xml)(x)[0])  # one thread: repeatable
