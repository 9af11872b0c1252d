"""OpenVINO IR (.xml + .bin, FP32 or FP16 weights) → float ONNX, built node by node with ``onnx.helper``.

The IR is read through OpenVINO's own API (``Core.read_model``), never by parsing the XML: the
reader resolves the .bin offsets, upgrades old opsets and runs shape inference, so every tensor
here has the static shape and element type OpenVINO itself computes. The ops are walked in
topological order (``get_ordered_ops``); each maps to a few ONNX nodes of the requested opset.

Constant subgraphs are folded with OpenVINO's own reference kernels (``Node.evaluate``) rather
than re-implemented: FP16 IRs (``compress_to_fp16``) and IRs converted from MediaPipe's TFLite
files store weights as f16 Constants behind a ``Convert`` to f32 ("weight decompression"), and
their bias / PReLU slopes reach the layer through ``Unsqueeze`` / ``Reshape`` of constants. All of
that becomes plain float32 initializers, so the ONNX carries the exact f32 values the OpenVINO
CPU plugin computes with. ``ShapeOf`` is folded from the static shape.

OpenVINO's per-op conventions that differ from ONNX are resolved while mapping: explicit pads
from ``auto_pad`` (computed from the static input shape), ``ceil`` pool rounding as extra end
padding (exact for MaxPool and for exclude-pad AvgPool), grouped convolution weights
``[G, O/G, I/G, k...]`` reshaped to ONNX's ``[O, I/G, k...]``, a 1-D PReLU slope aligned to the
channel axis, StridedSlice masks (begin/end/new-axis/shrink/ellipsis) resolved to one ``Slice``
plus a ``Reshape`` to OpenVINO's output shape, and ``Interpolate`` attributes checked against what
ONNX ``Resize`` can express. Anything outside that set is refused with one error listing every
unmapped op type and its count, so the user sees the whole gap at once.

A ``Conv`` followed by a per-channel constant ``Add`` (how OpenVINO spells a biased convolution)
is fused into ``Conv``'s bias input, as tf2onnx writes it, so the graph the optimize and quantize
stages see has the same shape whichever converter made it.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.convert.canonical import canonicalize
from pipeline.convert.runners import openvino_input_layout, read_openvino_model
from pipeline.errors import PosezooError

log = logging.getLogger(__name__)

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
#: Opsets whose operator signatures the mappings below are written for (Split / Squeeze /
#: Unsqueeze / Resize take their sizes and axes as inputs from 13; ReduceMean from 18).
OPSETS = range(13, 22)


class _Unmapped(Exception):
    """An op (or an attribute value of it) that has no ONNX mapping here; collected, not raised per node."""


class _Graph:
    """The ONNX graph under construction and the value of every OpenVINO output seen so far.

    A value is either an ONNX tensor name or a numpy array (a constant, materialized as an
    initializer only when an emitted node reads it, so folded-away f16 weights never reach the
    file).
    """

    def __init__(self, xml: Path, opset: int) -> None:
        self.xml = xml
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.values: dict[tuple[int, int], str | np.ndarray | None] = {}
        self._materialized: dict[int, tuple[np.ndarray, str]] = {}  # id → (array kept alive, so ids are never reused, name)
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, value: np.ndarray, stem: str = "const") -> str:
        """An initializer holding ``value``; one per array object (a constant read by several nodes is stored once)."""
        from onnx import numpy_helper

        key = id(value)
        if key not in self._materialized:
            name = self.fresh(stem)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
            self._materialized[key] = (value, name)
        return self._materialized[key][1]

    def emit(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1, **attrs: Any) -> list[str]:
        """Append one ONNX node; returns its output names."""
        from onnx import helper

        names = [self.fresh(op_type) for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(op_type), **attrs))
        return names


class _Op:
    """One OpenVINO node as the mappings see it: its inputs as ONNX names or constants, shapes, attributes."""

    def __init__(self, graph: _Graph, node: Any) -> None:
        self.graph = graph
        self.node = node
        self.type = node.get_type_name()
        self.attrs = node.get_attributes()
        self.inputs = [graph.values[_key(i.get_source_output())] for i in node.inputs()]

    def name(self, i: int) -> str:
        """Input ``i`` as an ONNX tensor name (constants become initializers)."""
        value = self.inputs[i]
        if isinstance(value, np.ndarray):
            return self.graph.constant(value)
        assert isinstance(value, str)
        return value

    def const(self, i: int) -> np.ndarray:
        """Input ``i``'s value; the mapping needs it known at conversion time (axes, shapes, pads)."""
        value = self.inputs[i]
        if not isinstance(value, np.ndarray):
            raise _Unmapped(f"{self.type} with a computed (non-constant) input {i}")
        return value

    def is_const(self, i: int) -> bool:
        return isinstance(self.inputs[i], np.ndarray)

    def in_shape(self, i: int = 0) -> list[int]:
        return [int(d) for d in self.node.get_input_shape(i)]

    def out_shape(self, i: int = 0) -> list[int]:
        return [int(d) for d in self.node.get_output_shape(i)]

    def emit(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> list[str]:
        return self.graph.emit(op_type, inputs, outputs, **attrs)

    def i64(self, values: Sequence[int] | np.ndarray) -> str:
        return self.graph.constant(np.asarray(values, dtype=np.int64).reshape(-1), "i64")


def _key(output: Any) -> tuple[int, int]:
    return (output.get_node().get_instance_id(), output.get_index())


# --- mappings ------------------------------------------------------------------------------------

Mapping = Callable[[_Op], list[str]]


def _broadcast_binary(onnx_type: str) -> Mapping:
    def convert(op: _Op) -> list[str]:
        mode = op.attrs.get("auto_broadcast", "numpy")
        if mode not in ("numpy", "none"):
            raise _Unmapped(f"{op.type} with auto_broadcast={mode}")  # pdpd: axis-aligned, not numpy
        if op.type == "Divide" and np.issubdtype(op.node.get_output_element_type(0).to_dtype(), np.integer):
            raise _Unmapped("integer Divide")  # OpenVINO floors (python division), ONNX truncates
        return op.emit(onnx_type, [op.name(0), op.name(1)])

    return convert


def _unary(onnx_type: str, **attrs: Any) -> Mapping:
    return lambda op: op.emit(onnx_type, [op.name(0)], **attrs)


def _convert(op: _Op) -> list[str]:
    from onnx import helper

    dtype = helper.np_dtype_to_tensor_dtype(op.node.get_output_element_type(0).to_dtype())
    return op.emit("Cast", [op.name(0)], to=dtype)


def _clamp(op: _Op) -> list[str]:
    dtype = op.node.get_output_element_type(0).to_dtype()
    lo, hi = np.asarray(op.attrs["min"], dtype=dtype), np.asarray(op.attrs["max"], dtype=dtype)
    return op.emit("Clip", [op.name(0), op.graph.constant(lo, "min"), op.graph.constant(hi, "max")])


def _prelu(op: _Op) -> list[str]:
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


def _explicit_pads(op: _Op, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> tuple[list[int], list[int]]:
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
        raise _Unmapped(f"{op.type} with auto_pad={auto}")
    return [int(p) for p in op.attrs["pads_begin"]], [int(p) for p in op.attrs["pads_end"]]


def _convolution(op: _Op) -> list[str]:
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


def _pool(op: _Op) -> list[str]:
    kernel = [int(k) for k in op.attrs["kernel"]]
    strides = [int(s) for s in op.attrs["strides"]]
    dilations = [int(d) for d in op.attrs.get("dilations", [1] * len(kernel))]
    begin, end = _explicit_pads(op, kernel, strides, dilations)
    rounding = op.attrs.get("rounding_type", "floor")
    if rounding not in ("floor", "ceil", "ceil_torch"):
        raise _Unmapped(f"{op.type} with rounding_type={rounding}")
    # OpenVINO's output size is known; pad the end far enough that floor rounding reaches it. For
    # MaxPool (pads are -inf) and exclude-pad AvgPool (pads are not counted) that is exactly ceil
    # rounding, whichever of OpenVINO's two ceil flavours decided the size.
    spatial, out = op.in_shape(0)[2:], op.out_shape(0)[2:]
    needed = [max(e, (o - 1) * s + (k - 1) * d + 1 - n - b) for e, o, s, k, d, n, b in zip(end, out, strides, kernel, dilations, spatial, begin)]
    is_avg = op.type == "AvgPool"
    include_pad = is_avg and not op.attrs.get("exclude-pad", op.attrs.get("exclude_pad", False))
    if include_pad and needed != end:
        raise _Unmapped("AvgPool counting pads with ceil rounding past the pads")  # ONNX would count the overhang
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides, "pads": begin + needed}
    if is_avg:
        attrs["count_include_pad"] = int(include_pad)
        if any(d != 1 for d in dilations):
            raise _Unmapped("dilated AvgPool")
        return op.emit("AveragePool", [op.name(0)], **attrs)
    if op.node.get_output_size() > 1 and op.node.output(1).get_target_inputs():
        raise _Unmapped("MaxPool whose indices output is used")  # ONNX flattens indices differently
    attrs["dilations"] = dilations
    return op.emit("MaxPool", [op.name(0)], **attrs)


def _matmul(op: _Op) -> list[str]:
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


def _reshape(op: _Op) -> list[str]:
    shape = op.const(1).astype(np.int64)
    # special_zero: a 0 copies the input dimension (ONNX allowzero=0); without it a 0 is a real 0.
    allowzero = 0 if op.attrs.get("special_zero", False) or not (shape == 0).any() else 1
    attrs = {"allowzero": 1} if allowzero else {}
    return op.emit("Reshape", [op.name(0), op.i64(shape)], **attrs)


def _transpose(op: _Op) -> list[str]:
    order = [int(p) for p in op.const(1).reshape(-1)]
    return op.emit("Transpose", [op.name(0)], perm=order or list(range(len(op.in_shape(0))))[::-1])


def _squeeze(op: _Op) -> list[str]:
    if len(op.inputs) < 2:
        axes = [i for i, d in enumerate(op.in_shape(0)) if d == 1]
    else:
        axes = [int(a) for a in op.const(1).reshape(-1)]
    return op.emit("Squeeze", [op.name(0), op.i64(axes)])


def _unsqueeze(op: _Op) -> list[str]:
    return op.emit("Unsqueeze", [op.name(0), op.i64(op.const(1).reshape(-1))])


def _concat(op: _Op) -> list[str]:
    return op.emit("Concat", [op.name(i) for i in range(len(op.inputs))], axis=int(op.attrs["axis"]))


def _split(op: _Op) -> list[str]:
    axis = int(op.const(1).reshape(()))
    sizes = [op.out_shape(i)[axis] for i in range(op.node.get_output_size())]
    return op.emit("Split", [op.name(0), op.i64(sizes)], len(sizes), axis=axis)


def _strided_slice(op: _Op) -> list[str]:
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


def _slice(op: _Op) -> list[str]:
    names = [op.name(0), op.name(1), op.name(2)]
    axes = op.name(4) if len(op.inputs) > 4 else op.i64(range(len(op.const(1).reshape(-1))))
    return op.emit("Slice", [*names, axes, op.name(3)])


_RESIZE_MODES = {"nearest": "nearest", "linear": "linear", "linear_onnx": "linear", "cubic": "cubic"}
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _interpolate(op: _Op) -> list[str]:
    version = op.node.get_type_info().version_id
    if version not in ("opset4", "opset11"):
        raise _Unmapped(f"Interpolate-{version}")
    mode = op.attrs["mode"]
    if mode not in _RESIZE_MODES:
        raise _Unmapped(f"Interpolate mode={mode}")
    if op.attrs.get("antialias", False):
        raise _Unmapped("Interpolate with antialias")  # ONNX Resize has it only from opset 18
    if any(op.attrs.get("pads_begin", [])) or any(op.attrs.get("pads_end", [])):
        raise _Unmapped("Interpolate with pads")
    if mode == "nearest" and op.attrs["nearest_mode"] not in _NEAREST_MODES:
        raise _Unmapped(f"Interpolate nearest_mode={op.attrs['nearest_mode']}")
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


def _reduce_mean(op: _Op) -> list[str]:
    axes = [int(a) for a in op.const(1).reshape(-1)]
    keep = int(bool(op.attrs.get("keep_dims", False)))
    if op.graph.opset >= 18:
        return op.emit("ReduceMean", [op.name(0), op.i64(axes)], keepdims=keep)
    return op.emit("ReduceMean", [op.name(0)], axes=axes, keepdims=keep)


def _pad(op: _Op) -> list[str]:
    mode = op.attrs.get("pad_mode", "constant")
    if mode not in ("constant", "edge", "reflect"):
        raise _Unmapped(f"Pad mode={mode}")  # symmetric has no ONNX equivalent
    pads = np.concatenate([op.const(1).reshape(-1), op.const(2).reshape(-1)]).astype(np.int64)
    inputs = [op.name(0), op.i64(pads)]
    if mode == "constant" and len(op.inputs) > 3:
        inputs.append(op.name(3))
    return op.emit("Pad", inputs, mode=mode)


def _gather(op: _Op) -> list[str]:
    if int(op.attrs.get("batch_dims", 0)) != 0:
        raise _Unmapped("Gather with batch_dims")
    return op.emit("Gather", [op.name(0), op.name(1)], axis=int(op.const(2).reshape(())))


def _softmax(op: _Op) -> list[str]:
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


# --- folding and the walk ------------------------------------------------------------------------


def _fold(node: Any, inputs: list[np.ndarray]) -> list[np.ndarray] | None:
    """Outputs of ``node`` on constant ``inputs`` with OpenVINO's reference kernel; None if it has none."""
    import openvino as ov

    if any(not node.get_output_partial_shape(i).is_static for i in range(node.get_output_size())):
        return None
    outputs = [ov.Tensor(node.get_output_element_type(i), node.get_output_shape(i)) for i in range(node.get_output_size())]
    try:
        if not node.evaluate(outputs, [ov.Tensor(np.ascontiguousarray(x)) for x in inputs]):
            return None
    except RuntimeError:
        return None
    return [np.array(t.data, copy=True) for t in outputs]


def _tensor_name(output: Any, fallback: str, taken: set[str]) -> str:
    names = sorted(output.get_names())
    name = names[0] if names else fallback
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _fuse_conv_bias(graph: Any) -> int:
    """Fold ``Add(Conv(x, W), b)`` with a per-channel constant ``b`` into ``Conv``'s bias; returns how many."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    consumers = Counter(name for node in graph.node for name in node.input)
    outputs = {o.name for o in graph.output}
    producer = {out: node for node in graph.node for out in node.output}
    fused, dead = 0, []
    for node in graph.node:
        if node.op_type != "Add":
            continue
        for conv_in, bias_in in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
            conv = producer.get(conv_in)
            if conv is None or conv.op_type != "Conv" or len(conv.input) != 2 or consumers[conv_in] != 1 or conv_in in outputs or bias_in not in inits:
                continue
            weights = inits.get(conv.input[1])
            bias = numpy_helper.to_array(inits[bias_in])
            if weights is None or bias.dtype != np.float32:
                continue
            channels, rank = weights.dims[0], len(weights.dims)
            # Against the (N, C, spatial...) output only the channel axis may exceed 1.
            padded = (1,) * (rank - bias.ndim) + bias.shape if bias.ndim <= rank else None
            if padded is None or padded[1] not in (1, channels) or any(d != 1 for i, d in enumerate(padded) if i != 1):
                continue
            flat = np.broadcast_to(bias.reshape(-1), (channels,)).astype(np.float32)
            name = f"{conv.output[0]}_bias"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(flat), name))
            conv.input.append(name)
            conv.output[0] = node.output[0]
            dead.append(node)
            fused += 1
            break
    for node in dead:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    keep = [i for i in graph.initializer if i.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(keep)
    return fused


def openvino_to_onnx(xml: Path, onnx_path: Path, opset: int) -> dict[str, Any]:
    """Convert the IR ``xml`` (with its .bin) to float ONNX at ``onnx_path`` (written atomically).

    Returns the report's view of it: IR op type counts, input name / shape / layout, output
    names (in the IR's Result order), how many ops were folded and how many ONNX nodes remain.
    """
    import onnx
    from onnx import helper

    xml = Path(xml)
    if opset not in OPSETS:
        raise PosezooError(f"convert.opset {opset}: the OpenVINO IR converter writes opsets {OPSETS.start}-{OPSETS.stop - 1}; set convert.opset in params.yaml")
    model = read_openvino_model(xml)
    if len(model.inputs) != 1:
        raise PosezooError(f"{xml}: the IR has {len(model.inputs)} inputs; posezoo converts single-input models")
    for port in model.inputs:
        if not port.get_partial_shape().is_static:
            raise PosezooError(f"{xml}: input {port.get_any_name()} has a dynamic shape {port.get_partial_shape()}; reshape the IR to a static input (openvino Model.reshape) and save it")
    graph = _Graph(xml, opset)
    ops = list(model.get_ordered_ops())
    type_counts = Counter(op.get_type_name() for op in ops)
    unmapped: Counter[str] = Counter()
    reasons: dict[str, str] = {}
    taken: set[str] = set()
    onnx_inputs = []
    folded = 0
    for node in ops:
        kind = node.get_type_name()
        outs = [(node.get_instance_id(), i) for i in range(node.get_output_size())]
        if kind == "Parameter":
            name = _tensor_name(node.output(0), node.get_friendly_name(), taken)
            dtype = helper.np_dtype_to_tensor_dtype(node.get_output_element_type(0).to_dtype())
            onnx_inputs.append(helper.make_tensor_value_info(name, dtype, [int(d) for d in node.get_output_shape(0)]))
            graph.values[outs[0]] = name
            continue
        if kind == "Constant":
            graph.values[outs[0]] = np.array(node.get_data(), copy=True)
            continue
        if kind == "Result":
            continue  # outputs are made below, in the model's Result order (not the walk's)
        inputs = [graph.values[_key(i.get_source_output())] for i in node.inputs()]
        if any(v is None for v in inputs):  # downstream of an unmapped op: cannot be built, but list its type if it has no mapping either
            if kind not in MAPPINGS and kind not in STRUCTURAL:
                unmapped[kind] += 1
                reasons.setdefault(kind, kind)
            graph.values.update(dict.fromkeys(outs))
            continue
        if kind == "ShapeOf" and node.get_input_partial_shape(0).is_static:
            dtype = node.get_output_element_type(0).to_dtype()
            graph.values[outs[0]] = np.array(node.get_input_shape(0), dtype=dtype)
            folded += 1
            continue
        if all(isinstance(v, np.ndarray) for v in inputs):
            values = _fold(node, inputs)  # type: ignore[arg-type]
            if values is not None:
                graph.values.update(zip(outs, values))
                folded += 1
                continue
        dynamic = [str(node.get_output_partial_shape(i)) for i in range(node.get_output_size()) if not node.get_output_partial_shape(i).is_static]
        if dynamic and kind in MAPPINGS:
            # e.g. an Interpolate whose scales sit behind an f16 Convert: OpenVINO's shape
            # inference does not look through it, and the mappings need static shapes.
            raise PosezooError(
                f"{xml}: {kind} '{node.get_friendly_name()}' has no static output shape ({dynamic[0]}); "
                "save the IR with static shapes (openvino Model.reshape, or save_model(..., compress_to_fp16=False) when shape inputs are compressed)"
            )
        mapping = MAPPINGS.get(kind)
        try:
            if mapping is None:
                raise _Unmapped(kind)
            names = mapping(_Op(graph, node))
        except _Unmapped as why:
            unmapped[kind] += 1
            reasons.setdefault(kind, str(why))
            graph.values.update(dict.fromkeys(outs))
            continue
        graph.values.update(zip(outs, names))
    if unmapped:
        listed = ", ".join(f"{kind} ×{n}" + (f" ({reasons[kind]})" if reasons[kind] != kind else "") for kind, n in sorted(unmapped.items(), key=lambda kv: (-kv[1], kv[0])))
        raise PosezooError(
            f"{xml}: {len(unmapped)} op type{'s have' if len(unmapped) > 1 else ' has'} no ONNX mapping: {listed}; "
            "re-export the model without them, or add a mapping in pipeline/convert/openvino_to_onnx.py"
        )
    onnx_outputs = []
    renames: dict[str, str] = {}
    for index, result in enumerate(model.get_results()):
        source = result.input(0).get_source_output()
        value = graph.values[_key(source)]
        name = _tensor_name(source, f"output_{index}", taken)
        if isinstance(value, np.ndarray):
            graph.emit("Identity", [graph.constant(value)], [name])
        elif value in renames or any(value == i.name for i in onnx_inputs):
            graph.emit("Identity", [value], [name])  # one tensor feeding two Results, or the input itself
        else:
            renames[value] = name
        dtype = helper.np_dtype_to_tensor_dtype(result.get_output_element_type(0).to_dtype())
        onnx_outputs.append(helper.make_tensor_value_info(name, dtype, [int(d) for d in result.get_output_shape(0)]))
    for node in graph.nodes:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    onnx_graph = helper.make_graph(graph.nodes, model.get_friendly_name() or "openvino_ir", onnx_inputs, onnx_outputs, graph.initializers)
    fused = _fuse_conv_bias(onnx_graph)
    onnx_model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="posezoo-openvino-ir")
    canonicalize(onnx_model)
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise PosezooError(f"{xml}: the converted ONNX does not validate ({str(err).splitlines()[0]}); report it with the IR attached") from err
    with atomic_path(onnx_path) as tmp:
        onnx.save(onnx_model, str(tmp))
    in_port = model.inputs[0]
    info = {
        "op_types": dict(sorted(type_counts.items())),
        "input": {"name": onnx_inputs[0].name, "shape": [int(d) for d in in_port.get_shape()], "layout": openvino_input_layout(model)},
        "outputs": [o.name for o in onnx_outputs],
        "folded_ops": folded,
        "fused_conv_bias": fused,
        "onnx_nodes": len(onnx_model.graph.node),
        "opset": opset,
    }
    log.info("%s → %s: %d IR ops (%d folded) → %d ONNX nodes", xml.name, Path(onnx_path).name, len(ops), folded, info["onnx_nodes"])
    return info
