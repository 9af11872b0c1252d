"""Read a TFLite flatbuffer into :class:`~.ir.Graph` with the ``tflite`` package's schema classes.

The flatbuffer is parsed, never executed: tensor shapes, dtypes and buffer sizes are all in the
file. Only the main subgraph (index 0) is estimated; control-flow bodies are reported in the notes
and their calling ops (WHILE, IF) come out as not counted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, TypeVar

import tflite
from tflite.BatchMatMulOptions import BatchMatMulOptions
from tflite.BuiltinOperator import BuiltinOperator
from tflite.Pool2DOptions import Pool2DOptions
from tflite.TensorType import TensorType

from pipeline.errors import PosezooError
from pipeline.footprint.ir import DTYPE_BITS, Graph, Kind, Linear, Op, QuantParams, Tensor, dtype_bytes

OptionsT = TypeVar("OptionsT", Pool2DOptions, BatchMatMulOptions)

_OP_NAMES: dict[int, str] = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
_DTYPES: dict[int, str] = {v: k.lower() for k, v in vars(TensorType).items() if not k.startswith("_")}

#: TFLite builtin op name -> kind. Anything else (custom ops, control flow...) is Kind.UNKNOWN.
KINDS: dict[str, Kind] = {
    **dict.fromkeys(
        ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "CONV_3D"), Kind.LINEAR
    ),
    "BATCH_MATMUL": Kind.BATCH_MATMUL,
    **dict.fromkeys(
        (
            "ADD", "SUB", "MUL", "DIV", "FLOOR_DIV", "FLOOR_MOD", "MAXIMUM", "MINIMUM",
            "SQUARED_DIFFERENCE", "POW", "LOGISTIC", "TANH", "RELU", "RELU6", "RELU_N1_TO_1",
            "RELU_0_TO_1", "LEAKY_RELU", "PRELU", "HARD_SWISH", "ELU", "GELU", "EXP", "LOG", "SQRT",
            "RSQRT", "ABS", "NEG", "SQUARE", "SIN", "COS", "FLOOR", "CEIL", "ROUND", "SIGN", "CAST",
            "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "EQUAL", "NOT_EQUAL", "LOGICAL_AND",
            "LOGICAL_OR", "LOGICAL_NOT", "SELECT", "SELECT_V2",
        ),
        Kind.ELEMENTWISE,
    ),
    **dict.fromkeys(("QUANTIZE", "DEQUANTIZE"), Kind.CONVERT),
    **dict.fromkeys(
        (
            "AVERAGE_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "ARG_MAX",
            "ARG_MIN",
        ),
        Kind.REDUCE,
    ),
    "MAX_POOL_2D": Kind.MAX_POOL,
    **dict.fromkeys(("SOFTMAX", "LOG_SOFTMAX"), Kind.SOFTMAX),
    **dict.fromkeys(("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"), Kind.RESIZE),
    **dict.fromkeys(
        (
            "CONCATENATION", "SPLIT", "SPLIT_V", "SLICE", "STRIDED_SLICE", "TRANSPOSE", "GATHER",
            "GATHER_ND", "PACK", "UNPACK", "TILE", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
            "BROADCAST_TO", "MIRROR_PAD", "SHAPE",
        ),
        Kind.MOVE,
    ),
    **dict.fromkeys(("RESHAPE", "SQUEEZE", "EXPAND_DIMS"), Kind.ALIAS),
    **dict.fromkeys(("PAD", "PADV2"), Kind.PAD),
}

#: Input elements read per output element by each resize mode.
_RESIZE_TAPS = {"RESIZE_NEAREST_NEIGHBOR": 0, "RESIZE_BILINEAR": 4}


def read_tflite(path: Path, data: bytes) -> Graph:
    """Parse ``data`` (the bytes of ``path``) into a graph.

    Raises PosezooError for a damaged file: the flatbuffers runtime reads offsets lazily and fails
    with whatever Python error the bad offset triggers, so every such error is translated here.
    """
    try:
        return _read(path, data)
    except PosezooError:
        raise
    except Exception as err:  # struct.error, IndexError, ValueError... from a bad offset
        raise PosezooError(
            f"{path}: truncated or corrupt TFLite flatbuffer ({type(err).__name__}: {err}); "
            "re-export or re-download the model"
        ) from err


def _read(path: Path, data: bytes) -> Graph:
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() < 1:
        raise PosezooError(f"{path}: TFLite model has no subgraph; re-export the model")
    sub = model.Subgraphs(0)
    notes: list[str] = []
    if model.SubgraphsLength() > 1:
        notes.append(
            f"only the main subgraph is estimated; {model.SubgraphsLength() - 1} other subgraph(s) "
            "(control-flow bodies) are not"
        )
    tensors: list[Tensor] = []
    quant_bytes = scales = per_channel = 0
    for i in range(sub.TensorsLength()):
        fb_tensor = sub.Tensors(i)
        tensors.append(_tensor(model, fb_tensor, len(data), notes))
        quant = fb_tensor.Quantization()
        if quant is not None:
            n_scales = quant.ScaleLength()
            # The schema stores scales as float32 and zero points as int64.
            quant_bytes += 4 * n_scales + 8 * quant.ZeroPointLength()
            scales += n_scales
            per_channel += n_scales > 1
    ops = tuple(_op(model, sub.Operators(i), i, tensors) for i in range(sub.OperatorsLength()))
    return Graph(
        format="tflite",
        tensors=tuple(tensors),
        ops=ops,
        inputs=_indices(sub.InputsLength(), sub.Inputs),
        outputs=_indices(sub.OutputsLength(), sub.Outputs),
        quant=QuantParams(nbytes=quant_bytes, scales=scales, per_channel_tensors=per_channel),
        notes=tuple(notes),
    )


def _indices(length: int, get: Callable[[int], int]) -> tuple[int, ...]:
    """A flatbuffer int vector as a tuple (``XAsNumpy`` returns 0, not [], when it is absent)."""
    return tuple(int(get(k)) for k in range(length))


def _tensor(model: tflite.Model, fb_tensor: tflite.Tensor, file_size: int, notes: list[str]) -> Tensor:
    name = (fb_tensor.Name() or b"").decode("utf-8", "replace")
    dtype = _DTYPES.get(fb_tensor.Type(), f"type{fb_tensor.Type()}")
    shape = _indices(fb_tensor.ShapeLength(), fb_tensor.Shape)
    stored = _stored_bytes(model.Buffers(fb_tensor.Buffer()), file_size)
    if stored:
        return Tensor(name, shape, dtype, stored, is_constant=True, storage=f"buffer{fb_tensor.Buffer()}")
    if dtype not in DTYPE_BITS:
        notes.append(f"tensor {name!r} has dtype {dtype}, which has no fixed size: counted as 0 bytes")
        return Tensor(name, shape, dtype, 0, is_constant=False)
    return Tensor(name, shape, dtype, dtype_bytes(dtype, math.prod(shape)), is_constant=False)


def _stored_bytes(buffer: tflite.Buffer, file_size: int) -> int:
    """Bytes of a buffer's data, checked to lie inside the file (so truncation is detected)."""
    if buffer.Offset() > 1:  # models over 2 GB keep data after the flatbuffer (0/1: data inline)
        if buffer.Offset() + buffer.Size() > file_size:
            raise ValueError(f"buffer data at {buffer.Offset()}+{buffer.Size()} lies past the end of the file")
        return int(buffer.Size())
    length = buffer.DataLength()
    if length:
        buffer.DataAsNumpy()  # numpy refuses a view that runs past the end of the bytes
    return int(length)


def _op_name(model: tflite.Model, opcode_index: int) -> str:
    code = model.OperatorCodes(opcode_index)
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == BuiltinOperator.CUSTOM:
        return (code.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _op(model: tflite.Model, fb_op: tflite.Operator, index: int, tensors: list[Tensor]) -> Op:
    op_type = _op_name(model, fb_op.OpcodeIndex())
    raw_inputs = _indices(fb_op.InputsLength(), fb_op.Inputs)
    outputs = _indices(fb_op.OutputsLength(), fb_op.Outputs)
    kind = KINDS.get(op_type, Kind.UNKNOWN)
    attrs: dict[str, int] = {}
    if op_type == "MAX_POOL_2D":
        pool = _options(fb_op, Pool2DOptions())
        attrs["window"] = pool.FilterHeight() * pool.FilterWidth()
    elif kind is Kind.RESIZE:
        attrs["taps"] = _RESIZE_TAPS[op_type]
    elif kind is Kind.BATCH_MATMUL:  # x [..., M, K] (or [..., K, M] when adj_x)
        x_shape = tensors[raw_inputs[0]].shape
        attrs["reduce"] = x_shape[-2] if _options(fb_op, BatchMatMulOptions()).AdjX() else x_shape[-1]
    linear = _linear(op_type, raw_inputs, outputs, tensors) if kind is Kind.LINEAR else None
    return Op(
        index=index,
        op_type=op_type,
        kind=kind,
        inputs=tuple(i for i in raw_inputs if i >= 0),  # -1 marks an omitted optional input
        outputs=outputs,
        linear=linear,
        attrs=attrs,
    )


def _options(fb_op: tflite.Operator, options: OptionsT) -> OptionsT:
    """Decode an op's builtin options table into the schema class passed in."""
    table = fb_op.BuiltinOptions()
    options.Init(table.Bytes, table.Pos)
    return options


def _linear(op_type: str, inputs: tuple[int, ...], outputs: tuple[int, ...], tensors: list[Tensor]) -> Linear:
    """Weight geometry from the TFLite layouts (weights and output shapes, NHWC)."""

    def has(k: int) -> bool:
        return len(inputs) > k and inputs[k] >= 0

    out = tensors[outputs[0]].shape
    w = tensors[inputs[1]].shape
    if op_type == "CONV_2D":  # weights [Co, Kh, Kw, Ci/groups]
        return Linear(math.prod(out[:-1]), w[0], w[1] * w[2], w[3], has(2))
    if op_type == "DEPTHWISE_CONV_2D":  # weights [1, Kh, Kw, C·multiplier]
        return Linear(math.prod(out[:-1]), w[3], w[1] * w[2], 1, has(2))
    if op_type == "CONV_3D":  # weights [Kd, Kh, Kw, Ci, Co]
        return Linear(math.prod(out[:-1]), w[4], w[0] * w[1] * w[2], w[3], has(2))
    if op_type == "TRANSPOSE_CONV":  # inputs (output_shape, weights [Co, Kh, Kw, Ci], input, bias)
        return Linear(math.prod(tensors[inputs[2]].shape[:-1]), w[0], w[1] * w[2], w[3], has(3))
    # FULLY_CONNECTED: weights [Co, Ci]; every other output dim is a row
    return Linear(math.prod(out) // w[0], w[0], 1, w[1], has(2))
