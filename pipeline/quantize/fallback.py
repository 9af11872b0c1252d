"""Per-layer float fallback: keep the fewest layers in float that bring drift within a budget.

The budget is relative to a reference scheme (e.g. drift ≤ 1.25 × the per-channel drift), both
measured on calibration crops (never the held-out ones the variant is judged on later), with the
ONNX exporter because it is the fast one; the chosen layers then apply to both formats.

Layers are ranked by how badly their weights survive int8 (see :func:`weight_ranking`) and kept
in float in that order, doubling the count until the budget is met, then bisecting to the fewest
that meet it, so only a handful of exports are needed.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from pipeline.calibration.sampler import read_manifest
from pipeline.errors import PosezooError
from pipeline.evaluate.drift import measure_drift
from pipeline.quantize.config import QuantConfig, quantizable_layers
from pipeline.quantize.onnx import quantize_onnx
from pipeline.quantize.ranges import RangeTable
from pipeline.registry import ModelSpec

log = logging.getLogger(__name__)


def subset_manifest(manifest: Path, count: int, dest_dir: Path) -> Path:
    """The first ``count`` samples of ``manifest`` as a manifest in ``dest_dir`` (images stay where they are)."""
    data = read_manifest(manifest)
    data["samples"] = [{**s, "file": str((Path(manifest).parent / s["file"]).resolve())} for s in data["samples"][:count]]
    data["num_samples"] = len(data["samples"])
    path = Path(dest_dir) / "search.json"
    path.write_text(json.dumps(data))
    return path


def weight_ranking(float_onnx: Path, per_channel: bool) -> list[tuple[str, float]]:
    """(node name, mean per-channel SQNR dB of its int8 weights) for every quantizable layer, worst first.

    The int8 weights are simulated exactly as the exporters make them (symmetric, ±127, one scale
    per tensor or per output channel: :func:`pipeline.optimize.graph.fake_quantize`). Ranking by
    the weights, not by activation errors, is deliberate: the per-tensor/per-channel gap is a
    weights-only difference, and onnxruntime's activation matching (``qdq_loss_debug``) was tried
    first and ranked poorly — its accumulated cross-model SQNR moves little per layer and misses
    layers whose output is fused with the next activation (measured on hand_landmark_full: 32
    float layers chosen that way left 27 px of a 39.8 px drift).
    """
    import onnx
    from onnx import numpy_helper

    from pipeline.optimize.graph import attribute, sqnr_db

    model = onnx.load(str(float_onnx))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    ranking = []
    for name in quantizable_layers(Path(float_onnx)):
        node = nodes.get(name)
        if node is None or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        # output channels: Conv / ConvTranspose axis 0 / 1, Gemm axis 0 when transB else 1, MatMul last
        channel = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0 if attribute(node, "transB", 0) else 1}.get(node.op_type, w.ndim - 1)
        ranking.append((name, sqnr_db(w, channel if per_channel else None, channel)))
    return sorted(ranking, key=lambda item: (item[1], item[0]))


def search_fallback(
    float_onnx: Path,
    manifest: Path,
    spec: ModelSpec,
    config: QuantConfig,
    reference: QuantConfig,
    budget: float,
    max_layers: int,
    samples: int = 20,
    ranges: RangeTable | None = None,
) -> dict[str, Any]:
    """Find the fewest layers to keep in float so drift ≤ ``budget`` × the ``reference`` drift.

    Returns the report: reference and starting drift, the ranking, every trial, and the chosen
    ``float_nodes`` (all trials on the first ``samples`` calibration crops). If even
    ``max_layers`` layers do not meet the budget, the best trial found is returned and the report
    says the budget was not met, so the variant is still built and the shortfall visible.
    ``ranges`` (the shared activation ranges of ``config``) saves recomputing them per trial.
    """
    with tempfile.TemporaryDirectory(prefix="posezoo-fallback-") as tmp:
        work = Path(tmp)
        subset = subset_manifest(manifest, samples, work)

        def drift(cfg: QuantConfig, name: str) -> tuple[float, Path]:
            out = work / f"{name}.onnx"
            quantize_onnx(float_onnx, out, manifest, spec.input, cfg, ranges=ranges if ranges is not None and ranges.fits(cfg) else None)
            metrics, _ = measure_drift(spec, float_onnx, out, subset)
            return float(metrics["mean_px"]), out

        ref_px, _ = drift(reference, "reference")
        start_px, _ = drift(config, "start")
        target = budget * ref_px
        report: dict[str, Any] = {"reference_mean_px": ref_px, "budget": budget, "target_mean_px": target, "start_mean_px": start_px, "samples": samples, "trials": []}
        if start_px <= target:
            return {**report, "float_nodes": [], "met": True}
        ranking = weight_ranking(float_onnx, config.per_channel)
        if not ranking:
            raise PosezooError(f"{float_onnx}: no quantizable layer could be ranked; the fallback search needs Conv/Gemm/MatMul layers")
        report["ranking"] = [{"node": n, "weight_sqnr_db": round(db, 3)} for n, db in ranking]
        limit = min(max_layers, len(ranking))
        tried: dict[int, float] = {}

        def trial(k: int) -> float:
            if k not in tried:
                tried[k], _ = drift(replace(config, float_nodes=tuple(n for n, _ in ranking[:k])), f"k{k}")
                report["trials"].append({"float_layers": k, "mean_px": tried[k]})
                log.info("fallback of %d layer(s): drift %.3f px (target %.3f)", k, tried[k], target)
            return tried[k]

        steps = sorted({*(2**i for i in range(limit.bit_length()) if 2**i < limit), limit})
        high = next((k for k in steps if trial(k) <= target), None)
        if high is None:
            best = min(tried, key=lambda k: (tried[k], k))
            return {**report, "float_nodes": [n for n, _ in ranking[:best]], "met": False, "mean_px": tried[best]}
        low = max((k for k in tried if k < high), default=0)  # every smaller count tried so far failed
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if trial(mid) <= target else (mid, high)
        return {**report, "float_nodes": [n for n, _ in ranking[:high]], "met": True, "mean_px": tried[high]}


def fallback_cost(float_onnx: Path, nodes: list[str]) -> dict[str, Any]:
    """Weights (float32 instead of int8: 3 more bytes each) and MACC of the layers kept in float.

    Read with the footprint estimator, so the MACC convention is the one every footprint figure
    uses; layers are found by their output tensor, which the estimator keeps by name.
    """
    import onnx

    from pipeline.footprint import estimate

    wanted = {n.output[0] for n in onnx.load(str(float_onnx), load_external_data=False).graph.node if n.name in nodes}
    footprint = estimate(float_onnx)
    tensors = footprint.graph.tensors
    weights = macc = 0
    for op, op_macc in zip(footprint.graph.ops, footprint.macc.per_op):
        if op.outputs and tensors[op.outputs[0]].name in wanted:
            weights += tensors[op.inputs[1]].elements
            macc += op_macc or 0
    return {"float_layers": len(nodes), "float_weights": weights, "extra_weight_bytes": weights * 3, "float_macc": macc}


def describe(report: Mapping[str, Any]) -> str:
    """One line for the log."""
    met = "met" if report["met"] else "NOT met"
    return f"{len(report['float_nodes'])} float layer(s), drift {report.get('mean_px', report['start_mean_px']):.3f} px vs target {report['target_mean_px']:.3f} px ({met})"
