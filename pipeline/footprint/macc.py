"""Multiply-accumulate counts per op, in ST's convention (STM32Cube.AI / ST Edge AI reports).

Why a hand-written counter: TensorFlow's converter prints an "estimated count of arithmetic ops"
for convs and FCs only, and no maintained library counts MACC offline over both TFLite and ONNX
the way ST does, which is the figure STM32 users compare against.

Conventions (``Ho·Wo`` output pixels, ``N`` batch, elements are of the op's first output unless
said otherwise):

==========================  ===============================================================
kind (ops)                  MACC
==========================  ===============================================================
conv (CONV_2D, Conv)        N·Ho·Wo·Co·Kh·Kw·Ci/groups + Co (the + Co, bias adds, only with
                            a bias); the same formula covers CONV_3D (Kd·Kh·Kw)
depthwise conv              N·Ho·Wo·C·Kh·Kw + C
transpose conv              N·Hi·Wi·Co·Kh·Kw·Ci/groups + Co (kernel applied per input pixel)
fully connected, Gemm,      rows·Co·Ci + Co, i.e. Co·(Ci+1) for one row (MatMul by a constant
MatMul by a constant        matrix is a fully connected layer)
BATCH_MATMUL, MatMul of     output elements × inner dimension K
two activations
elementwise (Add, Sub,      output elements: one evaluation per element, whether arithmetic,
Mul, Div, Max, Min, ...)    a comparison or a standalone activation (Logistic/Sigmoid, Tanh,
activations (Relu,          HardSwish, PReLU, LeakyRelu, Gelu...; an int8 runtime does each
Sigmoid, HardSwish, ...)    with one table lookup or one fused multiply). Activations fused
                            into a conv are free (0).
Quantize, Dequantize        2 per element (scale and offset)
average pool, mean, sum,    input elements (one accumulate or compare per element read)
reduce max/min, argmax
max pool                    output elements × window (Kh·Kw compares per output)
softmax, log softmax        3 per element (exponential, sum, normalise)
resize                      nearest: 0 (a copy); bilinear: 4 per output element; bicubic
                            (ONNX cubic): 16 per output element
batch normalization         2 per element (scale and shift)
pad, reshape, squeeze,      0 (data movement)
concat, split, slice,
transpose, gather, tile...
==========================  ===============================================================

An op evaluated once at load because all its inputs are constant (TFLite's DEQUANTIZE of float16
weights, an un-folded ONNX weight transpose) costs 0 per inference. An op of unknown kind is not
counted and is listed by name in :attr:`MaccCount.not_counted`, never added as a silent zero.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pipeline.footprint.ir import Graph, Kind, Op, is_precomputed

#: MACC per element for the kinds that are a fixed cost per element of their first output.
_PER_OUTPUT_ELEMENT: dict[Kind, int] = {
    Kind.ELEMENTWISE: 1,
    Kind.CONVERT: 2,
    Kind.SOFTMAX: 3,
    Kind.BATCH_NORM: 2,
    Kind.MOVE: 0,
    Kind.ALIAS: 0,
    Kind.PAD: 0,
}


@dataclass(frozen=True)
class MaccCount:
    """MACC of a graph: per op (None where not counted), total, and what was left out."""

    per_op: tuple[int | None, ...]
    total: int
    by_op_type: dict[str, int]
    not_counted: dict[str, int]  # op type -> number of ops not counted


def op_macc(graph: Graph, op: Op) -> int | None:
    """MACC of one op in the convention above, or None if its kind is unknown."""
    if op.kind is Kind.UNKNOWN:
        return None
    if is_precomputed(graph, op):
        return 0
    out_elements = graph.tensors[op.outputs[0]].elements
    if op.kind is Kind.LINEAR:
        assert op.linear is not None, f"reader left no geometry on {op.op_type} #{op.index}"
        g = op.linear
        return g.positions * g.out_channels * g.kernel * g.in_per_group + (g.out_channels if g.has_bias else 0)
    if op.kind is Kind.BATCH_MATMUL:
        return out_elements * op.attrs["reduce"]
    if op.kind is Kind.REDUCE:
        return graph.tensors[op.inputs[0]].elements
    if op.kind is Kind.MAX_POOL:
        return out_elements * op.attrs["window"]
    if op.kind is Kind.RESIZE:
        return out_elements * op.attrs["taps"]
    return out_elements * _PER_OUTPUT_ELEMENT[op.kind]


def count_macc(graph: Graph) -> MaccCount:
    """Count every op of ``graph``; unknown ops are listed, not zeroed."""
    per_op = tuple(op_macc(graph, op) for op in graph.ops)
    by_type: Counter[str] = Counter()
    not_counted: Counter[str] = Counter()
    for op, macc in zip(graph.ops, per_op):
        if macc is None:
            not_counted[op.op_type] += 1
        else:
            by_type[op.op_type] += macc
    return MaccCount(
        per_op=per_op,
        total=sum(by_type.values()),
        by_op_type=dict(sorted(by_type.items())),
        not_counted=dict(sorted(not_counted.items())),
    )
