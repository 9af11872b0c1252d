"""One model's footprint: read it, count MACC and weights, plan its arena, judge it per target.

Why hand-written: ST's Edge AI tool is the only thing that answers "does this variant fit my
chip" in ST's terms, and it is a cloud service or a licensed download; TensorFlow Lite Micro
reports an arena only after running on the target. No maintained library computes
ST-comparable MACC / weights / activation figures offline for both TFLite and ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pipeline.footprint.ir import Graph
from pipeline.footprint.loader import read_graph
from pipeline.footprint.macc import MaccCount, count_macc
from pipeline.footprint.planner import ArenaPlan, plan_arena
from pipeline.footprint.targets import Target, Verdict, judge
from pipeline.footprint.weights import Weights, count_weights

KIB = 1024


@dataclass(frozen=True)
class Footprint:
    """Everything ``posezoo footprint`` reports about one model file."""

    path: Path
    graph: Graph
    macc: MaccCount
    weights: Weights
    arena: ArenaPlan  # Reshape-like ops aliased, PAD in place: the reported activation RAM
    arena_tflm: ArenaPlan  # every tensor its own buffer, as TFLite Micro plans today

    @property
    def flash_bytes(self) -> int:
        """Weights plus quantization parameters: what the weights memory must hold."""
        return self.weights.total_bytes + self.weights.quant.nbytes

    def verdicts(self, targets: Iterable[Target]) -> list[Verdict]:
        """Fits / does-not-fit for each target."""
        return [judge(t, self.arena.arena_bytes, self.flash_bytes) for t in targets]


def estimate(path: Path | str) -> Footprint:
    """Estimate the footprint of a TFLite or ONNX model without executing it."""
    graph = read_graph(path)
    return Footprint(
        path=Path(path),
        graph=graph,
        macc=count_macc(graph),
        weights=count_weights(graph),
        arena=plan_arena(graph, in_place=True),
        arena_tflm=plan_arena(graph, in_place=False),
    )


def _op_rows(fp: Footprint) -> list[dict[str, Any]]:
    """Per-op table; each constant's bytes go to the first op that reads it, so rows add up."""
    seen: set[int] = set()
    rows = []
    for op, macc in zip(fp.graph.ops, fp.macc.per_op):
        constants = [t for t in dict.fromkeys(op.inputs) if fp.graph.tensors[t].is_constant and t not in seen]
        seen.update(constants)
        out = fp.graph.tensors[op.outputs[0]].shape if op.outputs else ()
        rows.append(
            {
                "index": op.index,
                "op": op.op_type,
                "output_shape": list(out),
                "macc": macc,
                "weights_bytes": sum(fp.graph.tensors[t].nbytes for t in constants),
            }
        )
    return rows


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    """Small and flat: DVC shows ``targets.<name>.fits`` and the headrooms (negative: over budget)."""
    doc: dict[str, Any] = {
        "fits": verdict.fits,
        "ram_headroom_bytes": verdict.target.ram_bytes - verdict.ram_needed_bytes,
    }
    if verdict.flash_needed_bytes is not None and verdict.target.flash_bytes is not None:
        doc["flash_headroom_bytes"] = verdict.target.flash_bytes - verdict.flash_needed_bytes
    return doc


def to_json(fp: Footprint, targets: Iterable[Target]) -> dict[str, Any]:
    """The metrics document: flat numbers first (what ``dvc metrics show`` lists), details nested.

    ``ops`` and ``notes`` are lists, which DVC does not show as metrics; per-op-type MACC,
    weights by dtype and target verdicts are small dicts DVC flattens to ``a.b`` keys.
    """
    w = fp.weights
    return {
        "model": fp.path.name,
        "format": fp.graph.format,
        "op_count": len(fp.graph.ops),
        "macc": fp.macc.total,
        "macc_by_op_type": fp.macc.by_op_type,
        "not_counted_op_count": sum(fp.macc.not_counted.values()),
        "not_counted_ops": fp.macc.not_counted,
        "weights_bytes": w.total_bytes,
        "weights_kib": round(w.total_bytes / KIB, 2),
        "weights_unique_bytes": w.unique_bytes,
        "weights_by_dtype": w.by_dtype,
        "quant_params_bytes": w.quant.nbytes,
        "quant_params_scales": w.quant.scales,
        "quant_params_per_channel_tensors": w.quant.per_channel_tensors,
        "flash_bytes": fp.flash_bytes,
        "activations_plan_bytes": fp.arena.arena_bytes,
        "activations_plan_kib": round(fp.arena.arena_bytes / KIB, 2),
        "activations_lower_bound_bytes": fp.arena.lower_bound_bytes,
        "activations_lower_bound_kib": round(fp.arena.lower_bound_bytes / KIB, 2),
        "activations_tflm_plan_bytes": fp.arena_tflm.arena_bytes,
        "targets": {v.target.name: _verdict_json(v) for v in fp.verdicts(targets)},
        "ops": _op_rows(fp),
        "notes": list(fp.graph.notes),
    }


def format_text(fp: Footprint, targets: Iterable[Target]) -> str:
    """A short human summary of :func:`to_json`."""
    w = fp.weights

    def size(n: int) -> str:
        return f"{n:,} B ({n / KIB:.2f} KiB)"

    dtypes = ", ".join(f"{dtype} {n:,}" for dtype, n in w.by_dtype.items()) or "none"
    rows = [
        ("MACC", f"{fp.macc.total:,} ({fp.macc.total / 1e6:.3f} M)"),
        ("weights", f"{size(w.total_bytes)}: {dtypes}"),
        ("quant params", f"{size(w.quant.nbytes)}: {w.quant.scales:,} scales, {w.quant.per_channel_tensors} per-channel tensors"),
        ("activations plan", size(fp.arena.arena_bytes)),
        ("lower bound", size(fp.arena.lower_bound_bytes)),
        ("TFLM plan today", f"{size(fp.arena_tflm.arena_bytes)} (no in-place reshape / pad)"),
    ]
    lines = [f"{fp.path} ({fp.graph.format}, {len(fp.graph.ops)} ops)"]
    lines += [f"  {label:<18} {value}" for label, value in rows]
    if fp.macc.not_counted:
        listed = ", ".join(f"{op} ×{n}" for op, n in fp.macc.not_counted.items())
        lines.append(f"  NOT COUNTED (unknown ops, MACC excludes them): {listed}")
    lines += [f"  note: {note}" for note in fp.graph.notes]
    for v in fp.verdicts(targets):
        flash = "" if v.flash_needed_bytes is None else f", flash {v.flash_needed_bytes:,} / {v.target.flash_bytes:,} B"
        word = "fits" if v.fits else "does NOT fit"
        lines.append(f"  {v.target.name:<18} {word}: RAM {v.ram_needed_bytes:,} / {v.target.ram_bytes:,} B{flash}")
    return "\n".join(lines)
