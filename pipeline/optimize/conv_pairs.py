"""The conv pairs cross-layer equalization may rescale (:mod:`pipeline.optimize.equalize`), and why others are not.

Channel ``i`` of a pair's first convolution may be divided by ``s_i > 0`` and the second's input
channel ``i`` multiplied by it only if everything between them commutes with that scale. What
may sit between the two convolutions (:func:`find_pairs`), each tensor read by the next node only:

* identity (conv into conv), ``Relu``, ``LeakyRelu``, ``PRelu``: positively homogeneous element by
  element for any slope, so per-channel PReLU slopes stay valid unchanged;
* ``MaxPool`` and zero-valued constant ``Pad`` (not padding batch or channel axes): they commute
  with a positive per-channel scale.

Everything else blocks the pair and is counted in the report by reason: ``Clip`` (ReLU6; as
``s · clip(x/s, 0, 6) = clip(x, 0, 6 s)`` it would need a per-channel upper bound that neither
ONNX ``Clip`` nor TFLite ``RELU6`` can express, so it is exact only for ``s = 1``), non-homogeneous
activations (``Sigmoid``, ``HardSwish``, …), graph outputs, and a tensor read by several nodes —
notably a residual ``Add`` (the tensor also feeds the skip connection; scaling it would need the
same per-channel scale on the other addend, which belongs to another layer), so a layer whose
output enters a residual ``Add`` is left as it is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx

from pipeline.optimize.graph import Graph, attribute

#: Activations f with f(s·x) = s·f(x) for s > 0 that are the identity for x ≥ 0 (absorbable).
ACTIVATIONS = ("Relu", "LeakyRelu", "PRelu")


@dataclass(frozen=True)
class Pair:
    """Two convolutions (node indices) joined by ``via`` nodes that commute with channel scaling."""

    first: int
    second: int
    via: tuple[int, ...]


def _weights_reason(graph: Graph, k: int) -> str | None:
    """Why conv ``k``'s weights/bias cannot be rescaled, or None."""
    node = graph.nodes[k]
    params = [name for name in node.input[1:3] if name]
    if len(params) < 1 or not all(graph.is_constant(name) for name in params):
        return "non_constant_weights"
    if len(graph.consumers[node.input[1]]) != 1:
        return "shared_weights"  # a shared bias is fine: the pair gets its own copy
    return None


def relu_n_bound(graph: Graph, node: onnx.NodeProto) -> float | None:
    """``M`` if ``node`` is ``Clip(x, 0, M)`` with constant scalar bounds and M > 0 (ReLU6 is M = 6), else None."""
    if node.op_type != "Clip" or len(node.input) != 3 or not all(node.input[1:]):
        return None
    low, high = graph.value(node.input[1]), graph.value(node.input[2])
    if low is None or high is None or low.size != 1 or high.size != 1 or float(low) != 0.0 or float(high) <= 0.0:
        return None
    return float(high)


def _link_reason(graph: Graph, node: onnx.NodeProto, first_link: bool, bounded_clip: bool) -> str | None:
    """Why ``node`` does not commute with a positive per-channel scale, or None if it does.

    ``bounded_clip`` admits ``Clip(0, M)`` right after the first conv (``first_link``), whose
    pre-activation statistics then bound the scales (see :func:`equalize_onnx`).
    """
    op = node.op_type
    if op in ACTIVATIONS:
        return None
    if op == "Clip" and bounded_clip and first_link and relu_n_bound(graph, node) is not None:
        return None
    if op == "MaxPool":
        return None if len(node.output) == 1 or not node.output[1] else "unsupported_op:MaxPool"
    if op == "Pad":
        inputs = list(node.input) + [""] * (4 - len(node.input))
        pads, value, axes = inputs[1], inputs[2], inputs[3]
        p, fill = graph.value(pads), graph.value(value) if value else np.zeros(())
        if attribute(node, "mode", b"constant") != b"constant" or axes or p is None or fill is None or np.any(fill):
            return "unsupported_op:Pad"
        rank = p.size // 2
        return None if not np.any(p[[0, 1, rank, rank + 1]]) else "channel_pad"
    if op == "Clip":
        return "clip_activation"
    if op in ("Add", "Sum"):
        return "residual_add"
    return f"unsupported_op:{op}"


def find_pairs(graph: Graph, bounded_clip: bool = False) -> tuple[list[Pair], Counter[str]]:
    """Equalizable conv pairs in graph order, and for every other conv why it starts none."""
    pairs: list[Pair] = []
    skipped: Counter[str] = Counter()
    for k, node in enumerate(graph.nodes):
        if node.op_type != "Conv":
            continue
        reason = _weights_reason(graph, k)
        tensor, via = node.output[0], []
        while reason is None:
            users = graph.consumers.get(tensor, [])
            if tensor in graph.outputs:
                reason = "graph_output"
            elif not users:
                reason = "unused_output"
            elif len(users) > 1:
                reason = "residual_add" if any(graph.nodes[u].op_type == "Add" for u in users) else "branching"
            elif graph.nodes[users[0]].op_type == "Conv" and graph.nodes[users[0]].input[0] == tensor:
                reason = _weights_reason(graph, users[0])
                if reason is None:
                    w1, w2 = graph.array(node.input[1]), graph.array(graph.nodes[users[0]].input[1])
                    if w1.shape[0] != w2.shape[1] * attribute(graph.nodes[users[0]], "group", 1):
                        reason = "channel_mismatch"
                    else:
                        pairs.append(Pair(k, users[0], tuple(via)))
                        break
            else:
                reason = _link_reason(graph, graph.nodes[users[0]], not via, bounded_clip)
                via.append(users[0])
                tensor = graph.nodes[users[0]].output[0]
        if reason is not None:
            skipped[reason] += 1
    return pairs, skipped
