"""QDQ int8 ONNX → float ONNX by dequantizing it: a published QDQ release as a source.

Some int8 releases are QDQ ONNX files (ST's YOLO26n-pose, from onnxruntime's ``quantize_static``):
a float graph whose weights are int8 initializers read through ``DequantizeLinear`` and whose
activations pass through ``QuantizeLinear`` → ``DequantizeLinear`` pairs. The float model here is
that graph without the quantization:

- a ``DequantizeLinear`` of an initializer (int8 weights, int32 biases, quantized constants)
  becomes a float initializer holding exactly ``(q - zero_point) * scale`` (per axis where the
  node has an ``axis``), so the float weights are the int8 weights times their scales, as on the
  TFLite path (:mod:`pipeline.convert.dequantize`);
- a ``QuantizeLinear`` → ``DequantizeLinear`` pair on a constant is folded the same way (the
  constant the int8 model computes with, rounded to its grid);
- a pair on an activation is removed: the readers of the ``DequantizeLinear`` read the float
  tensor the ``QuantizeLinear`` read (an Identity keeps a graph output's name). Where the pair's
  range starts exactly at 0 (zero point at the integer minimum) it also cut negative values to 0,
  and that is kept as a ``Relu`` unless the tensor cannot be negative anyway (made by Relu,
  Sigmoid, Softmax or HardSigmoid, or moved, pooled, added or multiplied from such tensors) or is
  the graph input. onnxruntime's quantizer (asymmetric activations) deletes a ``Relu`` / ``Clip``
  after a quantized op and leaves that clamp to do its work: removing the pair alone drops the
  activation (the unit test's ReLU net, quantized by ``quantize_static``, then differs from its
  int8 file by 41.5 output steps on average instead of 0.4). A deleted ``Clip``'s upper bound is
  not restored: above the calibrated maximum the int8 model saturates and the float model does
  not. (ST's YOLO26n-pose gets 3 such Relus, in its box decoding: x2y2, x1 + x2, w h.)

The float input stays float and takes the values the int8 file's input ``QuantizeLinear``
represents (:class:`~pipeline.convert.dequantize.DequantizeInfo` ``input_range``); each output
step is the scale of the ``DequantizeLinear`` that makes the output. Integer model inputs or
outputs are refused: the runners feed and read ONNX models as float. The result is judged
against the int8 file by :func:`pipeline.convert.dequantize.verify_dequantized`, like a dequantized
TFLite.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.convert.canonical import canonicalize
from pipeline.convert.dequantize import DequantizeInfo, _check_dequantized
from pipeline.errors import PosezooError
from pipeline.onnx_graph import OnnxGraph, remove_unused_initializers

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

_Q, _DQ = "QuantizeLinear", "DequantizeLinear"
#: Ops whose output is never negative: a pair after them that clamps at 0 needs no Relu.
_NONNEGATIVE = ("Relu", "Sigmoid", "Softmax", "HardSigmoid")
#: Ops whose output is not negative when their first input is not (they move, select or pool values).
_KEEP_SIGN = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split", "Resize", "Identity")
#: Ops whose output is not negative when none of their inputs is.
_KEEP_SIGN_ALL = ("Concat", "Add", "Mul", "Div")
#: Integer kernels of the QOperator format: a different graph form, not QDQ.
_QOPERATOR = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")


def _params(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale, zero point, axis) of a QuantizeLinear / DequantizeLinear whose parameters are initializers."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("block_size"):
        raise PosezooError(f"node {node.name or node.output[0]}: blocked quantization (block_size) is not supported; only per-tensor and per-axis QDQ")
    if node.input[1] not in values or (len(node.input) > 2 and node.input[2] and node.input[2] not in values):
        raise PosezooError(f"node {node.name or node.output[0]}: its scale or zero point is computed, not an initializer; the QDQ graph cannot be folded")
    scale = values[node.input[1]]
    zero = values[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros_like(scale, dtype=np.uint8)
    return scale.astype(np.float32), zero, int(attrs.get("axis", 1))


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-tensor (scalar) or per-axis (1-D) parameter shaped to broadcast over a rank-``ndim`` tensor."""
    if values.ndim == 0 or ndim == 0:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = values.size
    return values.reshape(shape)


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """``(q - zero) * scale`` in float32, as onnxruntime's DequantizeLinear computes it."""
    diff = q.astype(np.int64) - _along(zero, axis, q.ndim).astype(np.int64)
    return (diff.astype(np.float32) * _along(scale, axis, q.ndim)).astype(np.float32)


def _quantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """QuantizeLinear of a constant: round half to even, add the zero point, saturate to its type."""
    info = np.iinfo(zero.dtype)
    q = np.rint(x.astype(np.float32) / _along(scale, axis, x.ndim)) + _along(zero, axis, x.ndim).astype(np.float32)
    return np.clip(q, info.min, info.max).astype(zero.dtype)


def _clamps_at_zero(quantizer: onnx.NodeProto, values: dict[str, np.ndarray]) -> bool:
    """True when a per-tensor QuantizeLinear's range starts at exactly 0 (zero point = integer minimum)."""
    zero = _params(quantizer, values)[1]
    return zero.size == 1 and int(zero.reshape(-1)[0]) == int(np.iinfo(zero.dtype).min)


def _nonnegative(index: OnnxGraph, values: dict[str, np.ndarray]) -> set[str]:
    """Names of the tensors that cannot be negative in the float model this module writes."""
    known = {name for name, value in values.items() if value.dtype.kind == "f" and bool((value >= 0).all())}
    for node in index.nodes:  # topological order: inputs are judged before their readers
        if node.op_type in _NONNEGATIVE:
            ok = True
        elif node.op_type == _DQ and node.input[0] in values:
            ok = bool((_dequantize(values[node.input[0]], *_params(node, values)) >= 0).all())
        elif node.op_type == _DQ:  # a pair clamping at 0 becomes a Relu; else it passes its input's sign on
            quantizer = index.producer_node(node.input[0])
            ok = quantizer is not None and quantizer.op_type == _Q and (_clamps_at_zero(quantizer, values) or quantizer.input[0] in known)
        elif node.op_type in _KEEP_SIGN:
            ok = node.input[0] in known
        elif node.op_type in _KEEP_SIGN_ALL:
            ok = all(i in known for i in node.input)
        else:
            ok = False
        if ok:
            known.update(node.output)
    return known


def read_qdq(model: onnx.ModelProto, src: Path) -> DequantizeInfo:
    """The input range and output steps of the QDQ model ``src``; fails unless it is a float-I/O QDQ graph."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise PosezooError(f"{src}: has {len(inputs)} inputs; posezoo models take one image input")
    ops = {n.op_type for n in graph.node}
    if ops & set(_QOPERATOR):
        raise PosezooError(f"{src}: uses integer operators ({', '.join(sorted(ops & set(_QOPERATOR)))}), the QOperator format; only QDQ ONNX (QuantizeLinear / DequantizeLinear around float ops) can be dequantized")
    if _DQ not in ops:
        raise PosezooError(f"{src}: has no DequantizeLinear nodes, so there is nothing to dequantize; use source format onnx for a float ONNX")
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in graph.node for a in n.attribute):
        raise PosezooError(f"{src}: has control-flow subgraphs (If / Loop / Scan); they are not dequantized here")
    inp = inputs[0]
    bad = [f"input {inp.name}"] if inp.type.tensor_type.elem_type != TensorProto.FLOAT else []
    bad += [f"output {o.name}" for o in graph.output if o.type.tensor_type.elem_type != TensorProto.FLOAT]
    if bad:
        raise PosezooError(f"{src}: {', '.join(bad)} is not float32; only QDQ models with float inputs and outputs (quantized inside the graph) are supported")
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}

    first_q = next((n for n in graph.node if n.op_type == _Q and n.input[0] == inp.name), None)
    in_scale = in_zero = in_range = None
    if first_q is not None:
        scale, zero, _ = _params(first_q, values)
        if scale.size != 1:
            raise PosezooError(f"{src}: the input is quantized per axis; only one input scale is supported")
        info = np.iinfo(zero.dtype)
        in_scale, in_zero = float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0])
        in_range = (float((info.min - in_zero) * in_scale), float((info.max - in_zero) * in_scale))

    index = OnnxGraph(graph)
    steps: list[float | None] = []
    for output in graph.output:
        node = index.producer_node(output.name)
        steps.append(float(np.max(_params(node, values)[0])) if node is not None and node.op_type == _DQ else None)
    return DequantizeInfo(
        input_name=inp.name,
        input_dtype="float32",
        input_scale=in_scale,
        input_zero_point=in_zero,
        input_range=in_range,
        output_steps=tuple(steps),
    )


def remove_qdq(model: onnx.ModelProto, src: Path) -> int:
    """Fold weight dequantization into float initializers and drop activation Q/DQ pairs, in place.

    Returns the number of QuantizeLinear / DequantizeLinear nodes removed. A node the rules in the
    module docstring do not cover (a DequantizeLinear of a graph input or of another op's output,
    a QuantizeLinear read by anything but a DequantizeLinear) is refused rather than guessed.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    index = OnnxGraph(graph)
    outputs = index.outputs
    removed = sum(n.op_type in (_Q, _DQ) for n in graph.node)  # all of them, or an error below
    rename: dict[str, str] = {}  # DQ output -> float tensor its readers read instead
    floors: dict[str, str] = {}  # QuantizeLinear output -> its input cut at 0 (a Relu's output)
    nonnegative = _nonnegative(index, values)
    folded: dict[str, np.ndarray] = {}  # DQ output -> float constant
    keep = []
    for node in graph.node:
        if node.op_type != _DQ:
            keep.append(node)
            continue
        source = node.input[0]
        scale, zero, axis = _params(node, values)
        quantizer = index.producer_node(source)
        if source in values:  # int8 weight, int32 bias, quantized constant
            folded[node.output[0]] = _dequantize(values[source], scale, zero, axis)
        elif quantizer is not None and quantizer.op_type == _Q and quantizer.input[0] in values:  # Q → DQ of a float constant
            q_scale, q_zero, q_axis = _params(quantizer, values)
            folded[node.output[0]] = _dequantize(_quantize(values[quantizer.input[0]], q_scale, q_zero, q_axis), scale, zero, axis)
        elif quantizer is not None and quantizer.op_type == _Q:  # activation pair
            tensor = quantizer.input[0]
            if tensor in index.producer and tensor not in nonnegative and _clamps_at_zero(quantizer, values):
                if quantizer.output[0] not in floors:  # the pair cut negatives to 0: keep that as a Relu
                    floors[quantizer.output[0]] = f"{tensor}_relu"
                    keep.append(helper.make_node("Relu", [tensor], [floors[quantizer.output[0]]], name=f"{tensor}_relu"))
                tensor = floors[quantizer.output[0]]
            rename[node.output[0]] = tensor
        else:
            what = f"the output of {quantizer.op_type}" if quantizer is not None else "a graph input"
            raise PosezooError(f"{src}: DequantizeLinear {node.name or node.output[0]} reads {what}, not an initializer or a QuantizeLinear; the QDQ graph cannot be dequantized")

    def resolve(name: str) -> str:  # a chain of pairs (DQ → Q → DQ) ends at a float tensor
        while name in rename:
            name = rename[name]
        return name

    for name in [o.name for o in graph.output if o.name in rename or o.name in folded]:
        # A graph output made by a DequantizeLinear keeps its name: an Identity of the float
        # tensor (its other readers, if any, read the float tensor itself). In the graph's output
        # order: a set's order would change with PYTHONHASHSEED, and the file's bytes with it.
        if name in rename:
            keep.append(helper.make_node("Identity", [resolve(name)], [name], name=f"{name}_float"))
        else:
            graph.initializer.append(numpy_helper.from_array(folded.pop(name), name))
    for name, value in folded.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
    for node in keep:
        node.input[:] = [resolve(i) for i in node.input]
    used = {i for n in keep for i in n.input} | outputs
    keep = [n for n in keep if n.op_type != _Q or any(o in used for o in n.output)]
    left = [n.op_type for n in keep if n.op_type in (_Q, _DQ)]
    if left:
        raise PosezooError(f"{src}: {len(left)} QuantizeLinear node(s) feed something other than a DequantizeLinear; the QDQ graph cannot be dequantized")
    # Still in topological order: a reader of a removed DequantizeLinear now reads what its
    # QuantizeLinear read (made earlier) or the Relu put where the DequantizeLinear was, and an
    # output's Identity comes last.
    graph.ClearField("node")
    graph.node.extend(keep)
    return removed


def dequantize_qdq_onnx(src: Path, dest: Path, opset: int) -> DequantizeInfo:
    """Write the float version of the QDQ ONNX ``src`` to ``dest`` (atomic, canonical names, ``opset``).

    The float ONNX takes the real-valued input (``DequantizeInfo.input_range``) in the source's
    layout and gives float outputs; it holds no QuantizeLinear / DequantizeLinear and no int8
    initializer.
    """
    import onnx
    from onnx import version_converter

    src = Path(src)
    try:
        model = onnx.load(str(src))
    except Exception as err:  # protobuf / onnx raise their own types
        raise PosezooError(f"{src}: not a readable ONNX file ({str(err).splitlines()[0] if str(err) else type(err).__name__}); re-fetch it") from err
    info = read_qdq(model, src)
    initializers = {init.name for init in model.graph.initializer}
    for listed in [i for i in model.graph.input if i.name in initializers]:  # IR < 4 lists initializers as inputs
        model.graph.input.remove(listed)
    removed = remove_qdq(model, src)
    remove_unused_initializers(model.graph)
    _check_dequantized(model, src, by="the QDQ folding")
    source_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if source_opset != opset:
        try:
            model = version_converter.convert_version(model, opset)
        except Exception as err:
            raise PosezooError(f"{src}: the float graph (opset {source_opset}) cannot be converted to opset {opset} ({str(err).splitlines()[0] if str(err) else type(err).__name__}); set convert.opset to {source_opset}") from err
    model = canonicalize(model)
    onnx.checker.check_model(model)
    with atomic_path(dest) as tmp:
        onnx.save(model, str(tmp))
    log.info("dequantized %s: removed %d Q/DQ nodes; real input range %s, output steps %s", src.name, removed, info.input_range, info.output_steps)
    return info
