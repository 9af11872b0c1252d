"""The graph both readers produce, so MACC, weights and the memory plan are written once.

A TFLite flatbuffer and an ONNX model describe the same thing in different layouts (NHWC vs NCHW,
weights ``[Co, Kh, Kw, Ci]`` vs ``[Co, Ci/g, Kh, Kw]``, int8 tensors vs float tensors wrapped in
QuantizeLinear/DequantizeLinear). Each reader resolves those differences once: it names every op
with a format-neutral :class:`Kind`, gives every tensor the bytes it occupies *as deployed*, and
for the ops whose cost depends on weight geometry it fills a :class:`Linear` record. Everything
downstream only sees this module's types.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


class Kind(enum.Enum):
    """What an op does, as far as cost and memory are concerned (see :mod:`.macc` for MACC)."""

    LINEAR = "linear"  # conv, depthwise conv, transpose conv, fully connected: geometry in Linear
    BATCH_MATMUL = "batch_matmul"  # matmul of two activations; attrs["reduce"] = inner size
    ELEMENTWISE = "elementwise"  # one evaluation per output element (arithmetic, activations)
    CONVERT = "convert"  # quantize / dequantize between float and integer
    REDUCE = "reduce"  # one step per input element (average pool, mean, sum, argmax)
    MAX_POOL = "max_pool"  # attrs["window"] = kernel elements compared per output element
    SOFTMAX = "softmax"
    RESIZE = "resize"  # attrs["taps"] = input elements read per output element (0: nearest)
    BATCH_NORM = "batch_norm"  # scale and shift per element
    MOVE = "move"  # data movement only: concat, split, slice, transpose, gather...
    ALIAS = "alias"  # same bytes, new shape: reshape, squeeze, expand dims, flatten, identity
    PAD = "pad"  # zero padding, done in place over its input's buffer
    UNKNOWN = "unknown"  # not modelled: reported by name, never counted as zero


@dataclass(frozen=True)
class Linear:
    """Geometry of a weight-bearing op: ``positions·out_channels·kernel·in_per_group (+ Co)``.

    One record covers conv (positions = N·Ho·Wo, in_per_group = Ci/groups), depthwise conv
    (in_per_group = 1), transpose conv (positions = N·Hi·Wi: the kernel is applied per *input*
    pixel) and fully connected (positions = rows, kernel = 1, in_per_group = Ci).
    """

    positions: int
    out_channels: int
    kernel: int
    in_per_group: int
    has_bias: bool


@dataclass(frozen=True)
class Tensor:
    """One tensor as the deployed runtime holds it.

    ``nbytes`` is what it occupies: for a constant, the bytes stored in the file; for an
    activation, elements × item size of the dtype it is stored in (an ONNX float tensor that a
    QDQ pair turns into int8 is int8 here). ``storage`` identifies the stored data, so two
    tensors sharing one flatbuffer buffer can be told apart from two copies.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    is_constant: bool
    storage: str | None = None

    @property
    def elements(self) -> int:
        """Number of elements (1 for a scalar)."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class Op:
    """One operator, in execution order; ``inputs``/``outputs`` index :attr:`Graph.tensors`."""

    index: int
    op_type: str  # the name in the file: "CONV_2D", "Conv", or a custom op's code
    kind: Kind
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    linear: Linear | None = None
    attrs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class QuantParams:
    """Quantization parameters as stored in the file, kept apart from the weights."""

    nbytes: int = 0  # scale and zero-point bytes (TFLite: float32 scale + int64 zero point)
    scales: int = 0  # number of scale values
    per_channel_tensors: int = 0  # tensors quantized with more than one scale


@dataclass(frozen=True)
class Graph:
    """A model's main graph: tensors, ops in execution order, and graph inputs/outputs."""

    format: str  # "tflite" or "onnx"
    tensors: tuple[Tensor, ...]
    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    quant: QuantParams = QuantParams()
    notes: tuple[str, ...] = ()  # assumptions the reader had to make (e.g. batch dim taken as 1)


#: Bits per element of every dtype the readers map to; sub-byte types are packed.
DTYPE_BITS: dict[str, int] = {
    "bool": 8,
    "int4": 4,
    "uint4": 4,
    "int8": 8,
    "uint8": 8,
    "int16": 16,
    "uint16": 16,
    "float16": 16,
    "bfloat16": 16,
    "int32": 32,
    "uint32": 32,
    "float32": 32,
    "int64": 64,
    "uint64": 64,
    "float64": 64,
    "complex64": 64,
    "complex128": 128,
}


def dtype_bytes(dtype: str, elements: int) -> int:
    """Bytes that ``elements`` values of ``dtype`` occupy, packed (int4: two per byte)."""
    return (DTYPE_BITS[dtype] * elements + 7) // 8


def is_precomputed(graph: Graph, op: Op) -> bool:
    """True if every input of ``op`` is a constant: a runtime evaluates it once, at load."""
    return bool(op.inputs) and all(graph.tensors[i].is_constant for i in op.inputs)
