"""TFLite → float ONNX with tf2onnx.

tf2onnx reads the flatbuffer directly (fp16 weights behind DEQUANTIZE become fp32 initializers).
The ONNX input is made NCHW (``inputs_as_nchw``): that is the layout onnx2tf expects when it
turns the ONNX into an NHWC SavedModel, and the conventional layout for ONNX consumers. Names are
canonicalized (:mod:`pipeline.convert.canonical`) so the output is byte-for-byte reproducible.
:mod:`pipeline.convert.dequantize` converts int8 TFLite files through the same code, and both replace
an integer input's Cast (→ Sub → Mul) by a float input with :func:`float_input`.

tf2onnx's transpose optimizer cannot move a layout Transpose through a Split with several outputs
(a "Todo" in its ``_split_handler``), so a TFLite channel split (YOLOv8's C2f blocks) stays as
NCHW→NHWC Transpose → Split → NHWC→NCHW Transpose on every output. onnx2tf misreads those
layouts when H, W and C are equal (32×32×32) and fails; :func:`fold_split_transposes` replaces the
pattern by one Split on the untransposed tensor, which computes the same values.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.convert.canonical import canonicalize
from pipeline.errors import PosezooError
from pipeline.onnx_graph import OnnxGraph
from pipeline.threads import tensorflow

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

TFLITE_MAGIC = b"TFL3"


def _read_all_tables(data: bytes) -> None:
    """Read every table, vector and buffer of a TFLite flatbuffer in Python, which bounds-checks.

    LiteRT's Interpreter does not verify the flatbuffer: a truncated int8 file makes it crash the
    process (segmentation fault, ai-edge-litert 1.2.0), which no ``except`` can turn into a clear
    error. Python's flatbuffers reader raises instead when an offset points past the data.
    """
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > len(data):
            raise ValueError(f"buffer {i} ends past the end of the file")
        if not buffer.DataIsNone():
            buffer.DataAsNumpy()
    codes = model.OperatorCodesLength()
    for i in range(codes):
        model.OperatorCodes(i).BuiltinCode()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        count = graph.TensorsLength()
        for i in range(count):
            tensor = graph.Tensors(i)
            tensor.Name(), tensor.ShapeAsNumpy(), tensor.Buffer()
            quant = tensor.Quantization()
            if quant is not None:
                quant.ScaleAsNumpy(), quant.ZeroPointAsNumpy()
        indices = [graph.InputsAsNumpy(), graph.OutputsAsNumpy()]
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            if op.OpcodeIndex() >= codes:
                raise ValueError(f"operator {i} has no operator code")
            indices += [op.InputsAsNumpy(), op.OutputsAsNumpy()]
        if any(int(np.max(ix, initial=-1)) >= count for ix in indices if isinstance(ix, np.ndarray)):
            raise ValueError("an operator names a tensor that does not exist")


def check_tflite(path: Path) -> list[str]:
    """Input names of ``path``; fails with a clear message unless it is a loadable TFLite flatbuffer."""
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
        raise PosezooError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); check the source entry in the registry")
    from ai_edge_litert.interpreter import Interpreter

    try:
        _read_all_tables(data)
    except Exception as err:  # flatbuffers raises IndexError, struct.error, ValueError... on bad offsets
        raise PosezooError(f"{path}: truncated or corrupt TFLite file ({type(err).__name__}: {err}); fetch it again") from err
    try:
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise PosezooError(f"{path}: truncated or corrupt TFLite file ({str(err).splitlines()[0]}); fetch it again") from err
    return [d["name"] for d in interpreter.get_input_details()]


def _unsupported_ops(log_text: str) -> list[str]:
    ops = []
    for line in log_text.splitlines():
        if "Unsupported ops" in line or "is not supported" in line:
            ops.append(line.split("ERROR")[-1].strip(" -:"))
    return ops


def _perm(node: onnx.NodeProto) -> list[int]:
    from onnx import helper

    return next(list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm")


def fold_split_transposes(model: onnx.ModelProto) -> int:
    """Rewrite Transpose(p) → Split(axis) → Transpose(p⁻¹) on every output as Split(axis=p[axis]); returns the count.

    Splitting a transposed tensor along ``axis`` and transposing each piece back equals splitting
    the original tensor along ``p[axis]`` (same split sizes), so the rewrite is exact.
    """
    from onnx import helper

    graph = model.graph
    index = OnnxGraph(graph)  # built once: the checks below read the graph as tf2onnx wrote it
    folded = 0
    for split in [n for n in graph.node if n.op_type == "Split"]:
        before = index.producer_node(split.input[0])
        if before is None or before.op_type != "Transpose" or split.input[0] in index.outputs:
            continue
        perm = _perm(before)
        inverse = [perm.index(i) for i in range(len(perm))]
        after = [index.consumer_nodes(out) for out in split.output]
        if not all(
            users and all(u.op_type == "Transpose" and _perm(u) == inverse and u.output[0] not in index.outputs for u in users)
            for users in after
        ):
            continue
        axis_attr = next((a for a in split.attribute if a.name == "axis"), None)
        axis = axis_attr.i if axis_attr is not None else 0
        new_axis = perm[axis % len(perm)]
        if axis_attr is None:
            split.attribute.append(helper.make_attribute("axis", new_axis))
        else:
            axis_attr.i = new_axis
        split.input[0] = before.input[0]
        for out, users in zip(split.output, after):
            for user in users:
                for node in graph.node:
                    node.input[:] = [out if name == user.output[0] else name for name in node.input]
                graph.node.remove(user)
        if not any(before.output[0] in n.input for n in graph.node):
            graph.node.remove(before)
        folded += 1
    return folded


def float_input(model: onnx.ModelProto, src: Path, scale: float | None = None, zero_point: int | None = None) -> None:
    """Replace the integer input and its Cast → Sub(zero point) → Mul(scale) by a float input.

    The chain computes the real value of each quantized input element, which the float input now
    carries itself, so removing it is exact. Without ``scale`` the chain is the Cast alone: an
    unquantized integer input (plain uint8 pixels, as MoveNet's releases take). Any other
    structure is refused rather than guessed.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    name = graph.input[0].name
    index = OnnxGraph(graph)
    expected = [("Cast", None)] + ([("Sub", zero_point), ("Mul", scale)] if scale is not None else [])
    chain, tensor = [], name
    for op_type, constant in expected:
        users = index.consumer_nodes(tensor)
        node = users[0] if len(users) == 1 else None
        ok = node is not None and node.op_type == op_type and node.input[0] == tensor
        if ok and op_type == "Cast":
            ok = helper.get_attribute_value(node.attribute[0]) == TensorProto.FLOAT
        if ok and constant is not None:
            value = index.initializers.get(node.input[1])
            ok = value is not None and bool(np.allclose(numpy_helper.to_array(value), constant, rtol=1e-6, atol=0))
        if not ok:
            found = ", ".join(f"{n.op_type}({', '.join(n.input)})" for n in users) or "nothing"
            raise PosezooError(
                f"{src}: tf2onnx's dequantized input '{name}' does not feed the expected Cast → Sub(zero point) → Mul(scale) "
                f"(at {op_type}: found {found}); the input cannot be made float"
            )
        chain.append(node)
        tensor = node.output[0]
    for node in chain:
        graph.node.remove(node)
    for node in graph.node:
        node.input[:] = [name if i == tensor else i for i in node.input]
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT


@contextlib.contextmanager
def tf2onnx_conversion(src: Path, dest: Path, opset: int) -> Iterator[Callable[..., None]]:
    """The frame of every tf2onnx conversion here (TFLite, Keras): yields ``write``, into ``dest`` (atomic).

    The body converts on the CPU with tf2onnx's stdout silenced and its log captured, and
    passes the ModelProto to ``write(proto, rewrite=None)``, which checks the log for unconverted
    ops, folds Transpose/Split/Transpose patterns, applies ``rewrite``, renames canonically, runs
    the ONNX checker and saves. Any failure of tf2onnx becomes one line naming the unsupported ops.
    """
    import onnx

    tf = tensorflow()
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    tf2onnx_log = logging.getLogger("tf2onnx")
    tf2onnx_log.addHandler(handler)
    try:
        with atomic_path(dest) as tmp, contextlib.redirect_stdout(io.StringIO()), tf.device("/cpu:0"):

            def write(model: onnx.ModelProto, rewrite: Callable[[onnx.ModelProto], None] | None = None) -> None:
                _check_converted(captured.getvalue(), src)
                log.debug("%s: folded %d Transpose/Split/Transpose patterns", src.name, fold_split_transposes(model))
                if rewrite is not None:
                    rewrite(model)
                model = canonicalize(model)
                onnx.checker.check_model(model)
                onnx.save(model, str(tmp))

            yield write
    except PosezooError:
        raise
    except Exception as err:  # tf2onnx raises bare exceptions for unsupported graphs
        ops = _unsupported_ops(captured.getvalue())
        detail = "; ".join(ops) if ops else f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise PosezooError(f"{src}: tf2onnx cannot convert it ({detail}); the model uses ops tf2onnx (opset {opset}) does not support") from err
    finally:
        tf2onnx_log.removeHandler(handler)


def convert_tflite(
    src: Path,
    dest: Path,
    opset: int,
    dequantize: bool = False,
    rewrite: Callable[[onnx.ModelProto], None] | None = None,
) -> None:
    """Convert the TFLite file ``src`` to ``dest`` (atomic, NCHW input, canonical names).

    ``dequantize`` is tf2onnx's ``--dequantize`` mode: quantized weights become float
    initializers and quantize/dequantize pairs between layers are dropped. tf2onnx 1.17 offers it
    only on its command line, which passes it to ``_convert_common``; ``from_tflite`` does not
    take it, so this calls ``_convert_common`` with exactly ``from_tflite``'s arguments plus
    ``dequantize`` (one code path for both modes, same bytes as ``from_tflite`` for float files).
    ``rewrite`` edits the raw tf2onnx graph (before renaming) in place. Unsupported TFLite ops are
    named in the error.
    """
    from tf2onnx.convert import _convert_common

    src = Path(src)
    input_names = check_tflite(src)
    with tf2onnx_conversion(src, dest, opset) as write:
        model, _ = _convert_common(
            None,
            tflite_path=str(src),
            name=src.stem,
            continue_on_error=True,
            opset=opset,
            inputs_as_nchw=input_names,
            tensors_to_rename=None,
            initialized_tables=None,
            dequantize=dequantize,
        )
        write(model, rewrite)
    log.info("converted %s -> %s (opset %d%s)", src.name, dest, opset, ", dequantized" if dequantize else "")


def tflite_to_onnx(src: Path, dest: Path, opset: int) -> None:
    """Convert the float TFLite ``src`` to ``dest`` (atomic); unsupported TFLite ops are named in the error.

    A float model that takes integer pixels (MoveNet's float16 releases take uint8 and cast them)
    gets a float input carrying the same values, as every posezoo float model takes: tf2onnx
    keeps the input's integer type, which is what the rewrite looks at.
    """

    def float_pixels(model: onnx.ModelProto) -> None:
        from onnx import TensorProto

        if model.graph.input[0].type.tensor_type.elem_type in (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT16, TensorProto.INT32):
            float_input(model, Path(src))

    convert_tflite(src, dest, opset, rewrite=float_pixels)


def _check_converted(log_text: str, src: Path) -> None:
    ops = _unsupported_ops(log_text)
    if ops:
        raise PosezooError(f"{src}: tf2onnx left unsupported ops ({'; '.join(ops)}); the model cannot be converted to ONNX")
