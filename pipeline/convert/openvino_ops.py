"""OpenVINO op → ONNX node mappings, one function per IR op type (:data:`MAPPINGS`).

OpenVINO's per-op conventions that differ from ONNX are resolved while mapping: explicit pads
from ``auto_pad`` (computed from the static input shape), ``ceil`` pool rounding as extra end
padding (exact for MaxPool and for exclude-pad AvgPool), grouped convolution weights
``[G, O/G, I/G, k...]`` reshaped to ONNX's ``[O, I/G, k...]``, a 1-D PReLU slope aligned to the
channel axis, StridedSlice masks (begin/end/new-axis/shrink/ellipsis) resolved to one ``Slice``
plus a ``Reshape`` to OpenVINO's output shape, and ``Interpolate`` attributes checked against what
ONNX ``Resize`` can express. A mapping raises :class:`~pipeline.convert.openvino_emit.Unmapped`
for anything outside that set; the walk (:mod:`pipeline.convert.openvino_to_onnx`) collects them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from pipeline.convert.openvino_emit import IrOp, Unmapped

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
#: Opsets whose operator signatures the mappings below are written for (Split / Squeeze /
#: Unsqueeze / Resize take their sizes and axes as inputs from 13; ReduceMean from 18).
OPSETS = range(13, 22)

Mapping = Callable[[IrOp], list[str]]


def _broadcast_binary(onnx_type: str) -> Mapping:
    def convert(op: IrOp) -> list[str]:
        mode = op.attrs.get("auto_broadcast", "numpy")
        if mode not in ("numpy", "none"):
            raise Unmapped(f"{op.type} with auto_broadcast={mode}")  # pdpd: axis-aligned, not numpy
        if op.type == "Divide" and np.issubdtype(op.node.get_output_element_type(0).to_dtype(), np.integer):
            raise Unmapped("integer Divide")  # OpenVINO floors (python division), ONNX truncates
        return op.emit(onnx_type, [op.name(0), op.name(1)])

    return convert


def _unary(onnx_type: str, **attrs: Any) -> Mapping:
    return lambda op: op.emit(onnx_type, [op.name(0)], **attrs)


def _convert(op: IrOp) -> list[str]:
    from onnx import helper

    dtype = helper.np_dtype_to_tensor_dtype(op.node.get_output_element_type(0).to_dtype())
    return op.emit("Cast", [op.name(0)], to=dtype)


def _clamp(op: IrOp) -> list[str]:
    dtype = op.node.get_output_element_type(0).to_dtype()
    lo, hi = np.asarray(op.attrs["min"], dtype=dtype), np.asarray(op.attrs["max"], dtype=dtype)
    return op.emit("Clip", [op.name(0), op.graph.constant(lo, "min"), op.graph.constant(hi, "max")])


def _prelu(op: IrOp) -> list[str]:
    rank = len(op.in_shape(0))
    if op.is_const(1):
        slope = op.const(1)
        # OpenVINO aligns a 1-D slope of length C with the channel axis (1); ONNX broadcasts numpy-style.
        if slope.ndim == 1 and rank > 2 and slope.size == op.in_shape(0)[1] and slope.size > 1:
            slope = slope.reshape([-1] + [1] * (rank - 2))
        return op.emit("PRelu", [op.name(0), op.graph.constant(slope, "slope")])
    if len(op.in_shape(1)) == 1 and rank > 2 and op.in_shape(1)[0] == op.in_shape(0)[1] > 1:
        (slope,) = op.emit("Reshape", [op.name(1), op.i64([-1] + [1] * (rank - 2))])
        return op.emit("PRelu", [op.name(0), slope])
    return op.emit("PRelu", [op.name(0), op.name(1)])


def _explicit_pads(op: IrOp, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begin, end) pads of a conv / pool, resolving ``auto_pad`` from the static input shape."""
    spatial = op.in_shape(0)[2:]
    auto = op.attrs.get("auto_pad", "explicit")
    if auto == "valid":
        return [0] * len(spatial), [0] * len(spatial)
    if auto in ("same_upper", "same_lower"):
        begins, ends = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if auto == "same_upper" else large)
            ends.append(large if auto == "same_upper" else small)
        return begins, ends
    if auto not in ("explicit", "notset"):
        raise Unmapped(f"{op.type} with auto_pad={auto}")
    return [int(p) for p in op.attrs["pads_begin"]], [int(p) for p in op.attrs["pads_end"]]


def _convolution(op: IrOp) -> list[str]:
    weights_shape = op.in_shape(1)
    group = 1
    if op.type == "GroupConvolution":
        group = weights_shape[0]
        onnx_shape = [weights_shape[0] * weights_shape[1], *weights_shape[2:]]
        if op.is_const(1):
            weights = op.graph.constant(op.const(1).reshape(onnx_shape), "weights")
        else:
            (weights,) = op.emit("Reshape", [op.name(1), op.i64(onnx_shape)])
        kernel = weights_shape[3:]
    else:
        weights = op.name(1)
        kernel = weights_shape[2:]
    strides, dilations = [int(s) for s in op.attrs["strides"]], [int(d) for d in op.attrs["dilations"]]
    begin, end = _explicit_pads(op, kernel, strides, dilations)
    return op.emit("Conv", [op.name(0), weights], kernel_shape=list(kernel), strides=strides, dilations=dilations, pads=begin + end, group=group)


def _pool(op: IrOp) -> list[str]:
    kernel = [int(k) for k in op.attrs["kernel"]]
    strides = [int(s) for s in op.attrs["strides"]]
    dilations = [int(d) for d in op.attrs.get("dilations", [1] * len(kernel))]
    begin, end = _explicit_pads(op, kernel, strides, dilations)
    rounding = op.attrs.get("rounding_type", "floor")
    if rounding not in ("floor", "ceil", "ceil_torch"):
        raise Unmapped(f"{op.type} with rounding_type={rounding}")
    # OpenVINO's output size is known; pad the end far enough that floor rounding reaches it. For
    # MaxPool (pads are -inf) and exclude-pad AvgPool (pads are not counted) that is exactly ceil
    # rounding, whichever of OpenVINO's two ceil flavours decided the size.
    spatial, out = op.in_shape(0)[2:], op.out_shape(0)[2:]
    needed = [max(e, (o - 1) * s + (k - 1) * d + 1 - n - b) for e, o, s, k, d, n, b in zip(end, out, strides, kernel, dilations, spatial, begin)]
    is_avg = op.type == "AvgPool"
    include_pad = is_avg and not op.attrs.get("exclude-pad", op.attrs.get("exclude_pad", False))
    if include_pad and needed != end:
        raise Unmapped("AvgPool counting pads with ceil rounding past the pads")  # ONNX would count the overhang
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides, "pads": begin + needed}
    if is_avg:
        attrs["count_include_pad"] = int(include_pad)
        if any(d != 1 for d in dilations):
            raise Unmapped("dilated AvgPool")
        return op.emit("AveragePool", [op.name(0)], **attrs)
    if op.node.get_output_size() > 1 and op.node.output(1).get_target_inputs():
        raise Unmapped("MaxPool whose indices output is used")  # ONNX flattens indices differently
    attrs["dilations"] = dilations
    return op.emit("MaxPool", [op.name(0)], **attrs)


def _matmul(op: IrOp) -> list[str]:
    names = []
    for i, flag in ((0, "transpose_a"), (1, "transpose_b")):
        rank = len(op.in_shape(i))
        if not op.attrs.get(flag, False) or rank < 2:
            names.append(op.name(i))
        elif op.is_const(i):
            names.append(op.graph.constant(np.swapaxes(op.const(i), -1, -2).copy(), "matrix"))
        else:
            perm = list(range(rank - 2)) + [rank - 1, rank - 2]
            names.extend(op.emit("Transpose", [op.name(i)], perm=perm))
    return op.emit("MatMul", names)


def _reshape(op: IrOp) -> list[str]:
    shape = op.const(1).astype(np.int64)
    # special_zero: a 0 copies the input dimension (ONNX allowzero=0); without it a 0 is a real 0.
    allowzero = 0 if op.attrs.get("special_zero", False) or not (shape == 0).any() else 1
    attrs = {"allowzero": 1} if allowzero else {}
    return op.emit("Reshape", [op.name(0), op.i64(shape)], **attrs)


def _transpose(op: IrOp) -> list[str]:
    order = [int(p) for p in op.const(1).reshape(-1)]
    return op.emit("Transpose", [op.name(0)], perm=order or list(range(len(op.in_shape(0))))[::-1])


def _squeeze(op: IrOp) -> list[str]:
    if len(op.inputs) < 2:
        axes = [i for i, d in enumerate(op.in_shape(0)) if d == 1]
    else:
        axes = [int(a) for a in op.const(1).reshape(-1)]
    return op.emit("Squeeze", [op.name(0), op.i64(axes)])


def _unsqueeze(op: IrOp) -> list[str]:
    return op.emit("Unsqueeze", [op.name(0), op.i64(op.const(1).reshape(-1))])


def _concat(op: IrOp) -> list[str]:
    return op.emit("Concat", [op.name(i) for i in range(len(op.inputs))], axis=int(op.attrs["axis"]))


def _split(op: IrOp) -> list[str]:
    axis = int(op.const(1).reshape(()))
    sizes = [op.out_shape(i)[axis] for i in range(op.node.get_output_size())]
    return op.emit("Split", [op.name(0), op.i64(sizes)], len(sizes), axis=axis)


def _strided_slice(op: IrOp) -> list[str]:
    shape = op.in_shape(0)
    begin, end = op.const(1).astype(np.int64).reshape(-1), op.const(2).astype(np.int64).reshape(-1)
    stride = op.const(3).astype(np.int64).reshape(-1) if len(op.inputs) > 3 else np.ones_like(begin)

    def mask(name: str) -> list[int]:
        bits = [int(b) for b in op.attrs.get(name, [])]
        return bits + [0] * (len(begin) - len(bits))

    begin_mask, end_mask, new_axis, shrink, ellipsis = (mask(n) for n in ("begin_mask", "end_mask", "new_axis_mask", "shrink_axis_mask", "ellipsis_mask"))
    consumed = sum(1 for i in range(len(begin)) if not new_axis[i] and not ellipsis[i])
    starts, ends, axes, steps = [], [], [], []
    axis = 0
    for i in range(len(begin)):
        if new_axis[i]:
            continue
        if ellipsis[i]:
            axis += len(shape) - consumed
            continue
        step = int(stride[i])
        if shrink[i]:
            b = int(begin[i])
            starts.append(b)
            ends.append(b + 1 if b != -1 else INT64_MAX)
            steps.append(1)
        else:
            # A set begin/end mask bit means "ignore the value, take the whole range" (from the
            # end when the stride is negative).
            starts.append((0 if step > 0 else INT64_MAX) if begin_mask[i] else int(begin[i]))
            ends.append((INT64_MAX if step > 0 else INT64_MIN) if end_mask[i] else int(end[i]))
            steps.append(step)
        axes.append(axis)
        axis += 1
    (sliced,) = op.emit("Slice", [op.name(0), op.i64(starts), op.i64(ends), op.i64(axes), op.i64(steps)])
    # new_axis / shrink only insert or drop size-1 axes: OpenVINO's output shape says where.
    return op.emit("Reshape", [sliced, op.i64(op.out_shape(0))])


def _slice(op: IrOp) -> list[str]:
    names = [op.name(0), op.name(1), op.name(2)]
    axes = op.name(4) if len(op.inputs) > 4 else op.i64(range(len(op.const(1).reshape(-1))))
    return op.emit("Slice", [*names, axes, op.name(3)])


_RESIZE_MODES = {"nearest": "nearest", "linear": "linear", "linear_onnx": "linear", "cubic": "cubic"}
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _interpolate(op: IrOp) -> list[str]:
    version = op.node.get_type_info().version_id
    if version not in ("opset4", "opset11"):
        raise Unmapped(f"Interpolate-{version}")
    mode = op.attrs["mode"]
    if mode not in _RESIZE_MODES:
        raise Unmapped(f"Interpolate mode={mode}")
    if op.attrs.get("antialias", False):
        raise Unmapped("Interpolate with antialias")  # ONNX Resize has it only from opset 18
    if any(op.attrs.get("pads_begin", [])) or any(op.attrs.get("pads_end", [])):
        raise Unmapped("Interpolate with pads")
    if mode == "nearest" and op.attrs["nearest_mode"] not in _NEAREST_MODES:
        raise Unmapped(f"Interpolate nearest_mode={op.attrs['nearest_mode']}")
    attrs: dict[str, Any] = {"mode": _RESIZE_MODES[mode], "coordinate_transformation_mode": op.attrs["coordinate_transformation_mode"]}
    if mode == "nearest":
        attrs["nearest_mode"] = op.attrs["nearest_mode"]
    if mode == "cubic":
        attrs["cubic_coeff_a"] = float(op.attrs["cube_coeff"])
    rank = len(op.in_shape(0))
    if op.attrs["shape_calculation_mode"] == "scales":
        # Scales mode: OpenVINO maps coordinates with the given scale, not out/in; so does ONNX when given scales.
        scale_input = 2 if version == "opset4" else 1
        axes_input = 3 if version == "opset4" else 2
        axes = [int(a) for a in op.const(axes_input).reshape(-1)] if len(op.inputs) > axes_input else list(range(rank))
        scales = np.ones(rank, dtype=np.float32)
        scales[[a % rank for a in axes]] = op.const(scale_input).astype(np.float32).reshape(-1)
        return op.emit("Resize", [op.name(0), "", op.graph.constant(scales, "scales")], **attrs)
    return op.emit("Resize", [op.name(0), "", "", op.i64(op.out_shape(0))], **attrs)


def _reduce_mean(op: IrOp) -> list[str]:
    axes = [int(a) for a in op.const(1).reshape(-1)]
    keep = int(bool(op.attrs.get("keep_dims", False)))
    if op.graph.opset >= 18:
        return op.emit("ReduceMean", [op.name(0), op.i64(axes)], keepdims=keep)
    return op.emit("ReduceMean", [op.name(0)], axes=axes, keepdims=keep)


def _pad(op: IrOp) -> list[str]:
    mode = op.attrs.get("pad_mode", "constant")
    if mode not in ("constant", "edge", "reflect"):
        raise Unmapped(f"Pad mode={mode}")  # symmetric has no ONNX equivalent
    pads = np.concatenate([op.const(1).reshape(-1), op.const(2).reshape(-1)]).astype(np.int64)
    inputs = [op.name(0), op.i64(pads)]
    if mode == "constant" and len(op.inputs) > 3:
        inputs.append(op.name(3))
    return op.emit("Pad", inputs, mode=mode)


def _gather(op: IrOp) -> list[str]:
    if int(op.attrs.get("batch_dims", 0)) != 0:
        raise Unmapped("Gather with batch_dims")
    return op.emit("Gather", [op.name(0), op.name(1)], axis=int(op.const(2).reshape(())))


def _softmax(op: IrOp) -> list[str]:
    return op.emit("Softmax", [op.name(0)], axis=int(op.attrs["axis"]))


MAPPINGS: dict[str, Mapping] = {
    "Convert": _convert,
    "Convolution": _convolution,
    "GroupConvolution": _convolution,
    "Add": _broadcast_binary("Add"),
    "Multiply": _broadcast_binary("Mul"),
    "Subtract": _broadcast_binary("Sub"),
    "Divide": _broadcast_binary("Div"),
    "Maximum": _broadcast_binary("Max"),
    "Minimum": _broadcast_binary("Min"),
    "PRelu": _prelu,
    "Relu": _unary("Relu"),
    "Clamp": _clamp,
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "HSwish": _unary("HardSwish"),
    "HSigmoid": _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    "MaxPool": _pool,
    "AvgPool": _pool,
    "MatMul": _matmul,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Split": _split,
    "VariadicSplit": _split,
    "StridedSlice": _strided_slice,
    "Slice": _slice,
    "Interpolate": _interpolate,
    "ReduceMean": _reduce_mean,
    "Pad": _pad,
    "Gather": _gather,
    "SoftMax": _softmax,
    "Softmax": _softmax,
}
#: Op types handled by the walk itself rather than a mapping.
STRUCTURAL = ("Parameter", "Constant", "Result", "ShapeOf")
