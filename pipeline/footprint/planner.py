"""Activation RAM: the arena a good static planner needs, and the liveness lower bound.

Why not run a runtime and read its arena: the figure is wanted for every exported variant, for
ONNX as well as TFLite, without executing the model and with the deployment's conventions
(inputs and outputs allocated in the arena, as ST's ``--allocate-inputs --allocate-outputs``).

The planner is TensorFlow Lite Micro's ``GreedyMemoryPlanner``, step for step:

* lifetimes in TFLM's "allocation scopes": graph inputs are created at step 0, op ``i`` runs at
  step ``i + 1`` (its outputs are created then, its inputs last used then), graph outputs stay
  live to the last step; a non-constant tensor nobody produces (a variable) lives throughout,
  and so do the outputs of an op whose inputs are all constant (evaluated once at load);
* sizes rounded up to 16 bytes (TFLM's buffer alignment);
* buffers sorted by size, largest first, ties with the later tensor first (TFLM fills its sort
  array from the tail, then sorts it stably); each placed at the lowest offset where it fits
  between the buffers already placed that are live at the same time (first fit by offset); the
  arena is the highest end. Tie order matters: on YOLOv8n-pose 256 the other order gives
  786,432 B where TFLM (and this planner) give 794,688 B.

With ``in_place=True`` (the reported figure) Reshape/Squeeze/ExpandDims/Flatten/Identity outputs
share their input's buffer (a reshaped constant stays where the constant is stored). PAD is in
place too: when every reader of its output is a windowed op (a conv with a kernel larger than
1×1, a max pool) the padding is folded into those ops' own padding, as ST's tools and NPU
compilers do, and the padded tensor takes no bytes of its own; otherwise, when PAD is its
input's last reader, it writes over its input. Tensors sharing a
buffer make one buffer, live from the first creation to the last use, as large as its largest
member that takes bytes (a pad made in place needs the padded size from its input's creation:
that is why folding matters). With ``in_place=False`` every tensor has its own buffer, which is
what TFLM does today, so that mode reproduces TFLM's "arena allocation head" (for kernels that
ask no scratch buffer).

The lower bound is the largest total of buffers live at one step: no planner can do better.
Kernel scratch buffers (im2col and the like) depend on the kernel library and are not modelled.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from pipeline.footprint.ir import Graph, Kind, Op, is_precomputed

#: TFLite Micro's ``MicroArenaBufferAlignment()``.
ALIGNMENT = 16


@dataclass(frozen=True)
class Buffer:
    """One arena buffer: the tensors sharing it, its aligned size, live steps and placed offset."""

    tensors: tuple[int, ...]
    size: int
    first: int
    last: int
    offset: int

    @property
    def end(self) -> int:
        """One past the buffer's last byte."""
        return self.offset + self.size

    def overlaps(self, first: int, last: int) -> bool:
        """True if the buffer is live at any step of ``[first, last]`` (inclusive, as TFLM)."""
        return self.first <= last and first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    """The planned arena and the liveness lower bound, in bytes."""

    arena_bytes: int
    lower_bound_bytes: int
    peak_step: int  # a step at which the lower bound is reached (op index + 1)
    buffers: tuple[Buffer, ...]


def _align(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


class _Groups:
    """Union-find over tensor indices: tensors that share one buffer."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, tensor: int) -> int:
        root = self.parent.setdefault(tensor, tensor)
        while root != self.parent[root]:
            root = self.parent[root]
        self.parent[tensor] = root
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # root = lowest tensor index, TFLM's add order


def _in_place_groups(graph: Graph) -> tuple[_Groups, set[int]]:
    """Tensors sharing a buffer, and the padded tensors folded into their readers (no bytes)."""
    groups = _Groups()
    folded: set[int] = set()
    readers: dict[int, list[Op]] = {}
    for op in graph.ops:
        for tensor in op.inputs:
            readers.setdefault(tensor, []).append(op)
    for op in graph.ops:
        if not op.inputs or not op.outputs:
            continue
        source, target = op.inputs[0], op.outputs[0]
        if op.kind is Kind.ALIAS:  # a view of a constant joins the constant: no arena bytes
            groups.union(target, source)
        elif op.kind is Kind.PAD and not graph.tensors[source].is_constant:
            if target not in graph.outputs and all(_pads_itself(r) for r in readers.get(target, [])):
                folded.add(target)
                groups.union(target, source)
            elif len(readers[source]) == 1 and source not in graph.outputs:
                groups.union(target, source)
    return groups, folded


def _pads_itself(op: Op) -> bool:
    """True for a windowed op that can read a padded input virtually (its own padding)."""
    return op.kind is Kind.MAX_POOL or (op.kind is Kind.LINEAR and op.linear is not None and op.linear.kernel > 1)


def _lifetimes(graph: Graph) -> dict[int, tuple[int, int]]:
    """TFLM allocation scopes ``(first, last)`` of every non-constant tensor with bytes."""
    end = len(graph.ops)
    first: dict[int, int] = {t: 0 for t in graph.inputs}
    last: dict[int, int] = dict(first)
    whole_run: set[int] = set(graph.outputs)
    for step, op in enumerate(graph.ops, start=1):
        precomputed = is_precomputed(graph, op)
        for tensor in op.outputs:
            first.setdefault(tensor, 0 if precomputed else step)
            last[tensor] = step
            if precomputed:
                whole_run.add(tensor)
        for tensor in op.inputs:
            if tensor not in first:  # read but never produced nor fed: a variable
                first[tensor] = 0
                whole_run.add(tensor)
            last[tensor] = step
    for tensor in whole_run:
        first.setdefault(tensor, 0)
        last[tensor] = end
    return {
        t: (first[t], last[t])
        for t in first
        if not graph.tensors[t].is_constant and graph.tensors[t].nbytes > 0
    }


def place_greedy(requests: list[tuple[tuple[int, ...], int, int, int]]) -> list[Buffer]:
    """Place ``(tensors, size, first, last)`` requests, given in tensor order, as TFLM does."""
    placed: list[Buffer] = []  # ordered by offset; equal offsets in placement order
    offsets: list[int] = []
    for tensors, size, first, last in sorted(reversed(requests), key=lambda r: -r[1]):
        candidate = 0
        for entry in placed:
            if not entry.overlaps(first, last):
                continue
            if entry.offset - candidate >= size:
                break
            candidate = max(candidate, entry.end)
        where = bisect.bisect_right(offsets, candidate)
        offsets.insert(where, candidate)
        placed.insert(where, Buffer(tensors, size, first, last, candidate))
    return placed


def plan_arena(graph: Graph, *, in_place: bool = True, alignment: int = ALIGNMENT) -> ArenaPlan:
    """Plan the activation arena of ``graph`` (see the module docstring for the rules)."""
    groups, folded = _in_place_groups(graph) if in_place else (_Groups(), set())
    members: dict[int, list[int]] = {}
    lifetimes = _lifetimes(graph)
    for tensor in sorted(lifetimes):
        members.setdefault(groups.find(tensor), []).append(tensor)
    constant_groups = {groups.find(t) for t, tensor in enumerate(graph.tensors) if tensor.is_constant}
    requests = []
    for root in sorted(members.keys() - constant_groups):
        tensors = members[root]
        requests.append(
            (
                tuple(tensors),
                _align(max(graph.tensors[t].nbytes for t in tensors if t not in folded), alignment),
                min(lifetimes[t][0] for t in tensors),
                max(lifetimes[t][1] for t in tensors),
            )
        )
    buffers = place_greedy(requests)
    live = [0] * (len(graph.ops) + 1)
    for buffer in buffers:
        for step in range(buffer.first, buffer.last + 1):
            live[step] += buffer.size
    peak_step = max(range(len(live)), key=live.__getitem__)
    return ArenaPlan(
        arena_bytes=max((b.end for b in buffers), default=0),
        lower_bound_bytes=live[peak_step],
        peak_step=peak_step,
        buffers=tuple(buffers),
    )
