"""Weights flash: the constant bytes a model stores, by dtype, with quantization parameters apart.

Every constant tensor counts with the bytes stored for it (int8 ×1, float16 ×2, int32 bias and
float32 ×4; the reader already sized them). ST's code generator emits one array per constant
tensor, so a flatbuffer buffer shared by two tensors counts twice in :attr:`Weights.total_bytes`;
:attr:`Weights.unique_bytes` counts it once, as the flatbuffer itself (and TFLite Micro reading
it in place) does. Scales and zero points are reported on their own line, never folded in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pipeline.footprint.ir import Graph, QuantParams


@dataclass(frozen=True)
class Weights:
    """Constant bytes of a graph."""

    total_bytes: int  # every constant tensor's stored bytes
    unique_bytes: int  # storage shared between tensors counted once
    by_dtype: dict[str, int]
    quant: QuantParams


def count_weights(graph: Graph) -> Weights:
    """Sum the stored bytes of ``graph``'s constant tensors."""
    by_dtype: Counter[str] = Counter()
    unique: dict[str, int] = {}
    for tensor in graph.tensors:
        if tensor.is_constant:
            by_dtype[tensor.dtype] += tensor.nbytes
            unique[tensor.storage or tensor.name] = tensor.nbytes
    return Weights(
        total_bytes=sum(by_dtype.values()),
        unique_bytes=sum(unique.values()),
        by_dtype=dict(sorted(by_dtype.items())),
        quant=graph.quant,
    )
