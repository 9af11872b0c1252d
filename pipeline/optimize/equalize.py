"""Cross-layer equalization and bias absorption on a float ONNX (Nagel et al. 2019, §4.1, §4.1.1).

Why: per-tensor int8 gives all output channels of a weight tensor one scale, so a channel whose
weights span 1 % of the tensor's range is rounded to about three levels (depthwise convolutions
are the usual victims). For consecutive layers ``y = W2 f(W1 x + b1) + b2`` with ``f``
positively homogeneous (``f(s x) = s f(x)`` for ``s > 0``, per channel), dividing output channel
``i`` of ``W1`` and ``b1`` by ``s_i`` and multiplying input channel ``i`` of ``W2`` by ``s_i``
leaves the function unchanged. ``s_i = sqrt(r1_i r2_i) / r2_i`` (``r`` = per-channel max |w|)
gives both channels the range ``sqrt(r1_i r2_i)``, which maximizes the pair's summed per-tensor
precision (Nagel §4.1); in a chain a layer is scaled on both sides, so the pairs are swept until
no scale moves (their fixed point).

What may sit between the two convolutions, and what blocks a pair, is decided by
:func:`pipeline.optimize.conv_pairs.find_pairs`.

Opt-in (``clip_headroom``): ``Clip(0, M)`` directly after the first conv is admitted with scales
bounded by what the calibration images show (:func:`_clip_bounds`), exact on those images only.
MobileNetV2-style models (hand, BlazePose) put ReLU6 between almost every conv pair, so without
it cross-layer equalization finds next to nothing there.

``by="activations"`` (with ``clip_headroom``) chooses the scales from the calibration activations
instead of the weights, in one pass: every free channel of the first conv's output is scaled to
the same range (the tensor's largest, or ``M / headroom`` behind ``Clip(0, M)``), so a channel
whose activations span 0.4 % of its tensor's int8 range (BlazePose's first ReLU6 output has one
peaking at 0.023 of 6, i.e. one int8 step, read by weights ~100× the layer's median) is no
longer rounded to one or two levels; the next layer's input weights shrink by the same factor
(SmoothQuant's activation-to-weight migration, Xiao et al. 2023, applied per conv pair). It grows
the first layer's output-channel weights, which per-channel weights absorb and per-tensor ones
do not, so it is a candidate for per-channel recipes.

Bias absorption (data-driven §4.1.1): when ``f`` is ReLU, LeakyReLU or PReLU (all the identity on
``h ≥ 0``), ``f(h) = f(h − c) + c`` for every ``h ≥ c ≥ 0``. With ``c_i = max(0, min h_i)`` over
the calibration images (the minimum, i.e. the 0th percentile: any higher percentile breaks the
equality for the samples below it) the shift moves from ``b1`` into ``b2 += W2 · c`` and the
activation range that int8 must cover shrinks by ``c_i``. ``W2 · c`` is a constant map only if
the second convolution (and the path to it) adds no zero padding, so padded pairs are not absorbed.
It is exact on the calibration images and on any input whose pre-activation stays above ``c``.

:func:`equalize_onnx` verifies the result against the original with onnxruntime on calibration
images before writing it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from pipeline.atomic import atomic_path
from pipeline.convert.verify import MaxAbsDiff, compare_outputs
from pipeline.errors import PosezooError
from pipeline.optimize.conv_pairs import ACTIVATIONS, Pair, find_pairs, relu_n_bound
from pipeline.optimize.graph import (
    Graph,
    attribute,
    conv_input_channels,
    load_inputs,
    run_outputs,
    save_bytes,
    session,
    sqnr_db,
)
from pipeline.registry import InputSpec

log = logging.getLogger(__name__)

def _out_ranges(w: np.ndarray) -> np.ndarray:
    """max |w| per output channel."""
    return np.max(np.abs(w.reshape(w.shape[0], -1)), axis=1)


def _in_ranges(w: np.ndarray, group: int) -> np.ndarray:
    """max |w| per input channel of a (grouped) convolution weight."""
    slices = np.max(np.abs(w.reshape(w.shape[0], w.shape[1], -1)), axis=2)
    ranges = np.zeros(w.shape[1] * group)
    np.maximum.at(ranges, conv_input_channels(w.shape, group).ravel(), slices.ravel())
    return ranges


def _spread(ranges: np.ndarray) -> float:
    """Largest over smallest nonzero channel range (1 = perfectly equal)."""
    nonzero = ranges[ranges > 0]
    return float(nonzero.max() / nonzero.min()) if nonzero.size else 1.0


def _bias_name(graph: Graph, k: int) -> str:
    """Conv ``k``'s own bias initializer (a private copy if shared, zeros if absent)."""
    return graph.own_constant(k, 2, np.zeros(graph.array(graph.nodes[k].input[1]).shape[0]))


@dataclass(frozen=True)
class ClipBounds:
    """Admissible total scales of a pair through ``Clip(0, M)``: ``S_i ≥ lower_i``, or 1 where ``fixed``."""

    lower: np.ndarray
    fixed: np.ndarray


def _scale_pair(graph: Graph, pair: Pair, total: np.ndarray, bounds: ClipBounds | None, scales: np.ndarray | None = None) -> np.ndarray:
    """Equalize one pair in place; return this step's scales s (output channel i of W1 divided by s_i).

    ``total`` is the product of the pair's earlier steps, which ``bounds`` constrain. ``scales``
    given: apply those instead of the weight-balancing ones.
    """
    first, second = graph.nodes[pair.first], graph.nodes[pair.second]
    w1, w2 = graph.array(first.input[1]), graph.array(second.input[1])
    group = attribute(second, "group", 1)
    if scales is not None:
        s = scales
    else:
        r1, r2 = _out_ranges(w1), _in_ranges(w2, group)
        s = np.ones_like(r1)
        live = (r1 > 0) & (r2 > 0)  # a dead channel has nothing to equalize
        s[live] = np.sqrt(r1[live] / r2[live])
    if bounds is not None:
        s = np.where(bounds.fixed, 1.0, np.maximum(total * s, bounds.lower)) / total
    w1 /= s.reshape((-1,) + (1,) * (w1.ndim - 1))
    if len(first.input) > 2 and first.input[2]:
        graph.array(_bias_name(graph, pair.first))[...] /= s
    idx = conv_input_channels(w2.shape, group)
    w2 *= s[idx].reshape(idx.shape + (1,) * (w2.ndim - 2))
    return s


def _equalize(graph: Graph, pairs: list[Pair], bounds: dict[Pair, ClipBounds], max_iterations: int, tolerance: float) -> tuple[int, bool, list[np.ndarray]]:
    """Sweep the pairs until every scale is within ``tolerance`` of 1 (in log); total scale per pair."""
    total = [np.ones(graph.array(graph.nodes[p.first].input[1]).shape[0]) for p in pairs]
    for iteration in range(1, max_iterations + 1):
        worst = 0.0
        for n, pair in enumerate(pairs):
            s = _scale_pair(graph, pair, total[n], bounds.get(pair))
            total[n] *= s
            worst = max(worst, float(np.max(np.abs(np.log(s)))))
        if worst <= tolerance:
            return iteration, True, total
    return max_iterations, not pairs, total


def _clip_bounds(graph: Graph, pairs: list[Pair], inputs: list[np.ndarray], headroom: float) -> tuple[dict[Pair, ClipBounds], dict[str, int]]:
    """Scale bounds that keep every ``Clip(0, M)`` pair exact on the calibration images.

    Through the clip, channel i computes ``S_i · clip(h_i / S_i, 0, M) = clip(h_i, 0, M S_i)``,
    equal to ``clip(h_i, 0, M)`` wherever ``h_i`` stays below both bounds. A channel whose
    calibration maximum ``m_i`` satisfies ``headroom · m_i ≤ M`` is free with
    ``S_i ≥ headroom · m_i / M``; any other channel keeps ``S_i = 1``.
    """
    clipped = [(p, top) for p in pairs if p.via and (top := relu_n_bound(graph, graph.nodes[p.via[0]])) is not None]
    names = [graph.nodes[p.first].output[0] for p, _ in clipped]
    highs: dict[str, np.ndarray] = {}
    if names:
        for values in run_outputs(graph.commit(), graph.input_name, names, inputs):
            for n in names:
                v = values[n]
                m = v.max(axis=tuple(a for a in range(v.ndim) if a != 1))
                highs[n] = np.maximum(highs[n], m) if n in highs else m
    bounds: dict[Pair, ClipBounds] = {}
    stats = {"pairs": len(clipped), "channels_free": 0, "channels_fixed": 0}
    for (pair, top), name in zip(clipped, names):
        need = headroom * np.maximum(highs[name].astype(np.float64), 0.0)
        fixed = need > top
        bounds[pair] = ClipBounds(lower=need / top, fixed=fixed)
        stats["channels_fixed"] += int(fixed.sum())
        stats["channels_free"] += int((~fixed).sum())
    return bounds, stats


def _activation_scales(graph: Graph, pairs: list[Pair], inputs: list[np.ndarray], bounds: dict[Pair, ClipBounds]) -> list[np.ndarray]:
    """Apply ``by="activations"`` scales to every pair in place (see the module docstring); the scales.

    Channel ``i`` of the first conv's output peaks at ``m_i`` over the calibration images (after
    the pair's activation: ``max(h_i, 0)`` behind ReLU / Clip, ``max |h_i|`` otherwise). With the
    target ``T`` (the largest admissible peak), ``S_i = m_i / T`` brings it to ``T``; behind a clip
    ``S_i`` is also held above the bound that keeps the pair exact on the calibration images.
    """
    if not pairs:  # e.g. SiLU models: nothing to scale, and no tensor to measure
        return []
    names = [graph.nodes[p.first].output[0] for p in pairs]
    peaks: dict[str, np.ndarray] = {}
    for values in run_outputs(graph.commit(), graph.input_name, names, inputs):
        for pair, n in zip(pairs, names):
            v = values[n]
            v = np.maximum(v, 0.0) if pair.via and graph.nodes[pair.via[0]].op_type in ("Relu", "Clip") else np.abs(v)
            m = v.max(axis=tuple(a for a in range(v.ndim) if a != 1))
            peaks[n] = np.maximum(peaks[n], m) if n in peaks else m
    scales = []
    for pair, name in zip(pairs, names):
        m = peaks[name].astype(np.float64)
        live = m > 0
        s = np.ones_like(m)
        bound = bounds.get(pair)
        if bound is not None:
            free = live & ~bound.fixed
            s[free] = bound.lower[free]  # = headroom * m_i / M: the channel peaks at M / headroom
        elif live.any():
            s[live] = m[live] / m[live].max()
        scales.append(_scale_pair(graph, pair, np.ones_like(s), None, s))
    return scales


def _absorbable(graph: Graph, pair: Pair) -> bool:
    """True if ``f(h) = f(h − c) + c`` moves exactly into the second conv's bias (see module doc)."""
    ops = [graph.nodes[k].op_type for k in pair.via]
    second = graph.nodes[pair.second]
    unpadded = attribute(second, "auto_pad", b"NOTSET") in (b"NOTSET", b"VALID") and not any(attribute(second, "pads", []))
    return bool(ops) and ops[0] in ACTIVATIONS and all(op == "MaxPool" for op in ops[1:]) and unpadded


def _absorb(graph: Graph, pairs: list[Pair], inputs: list[np.ndarray]) -> dict[str, Any]:
    """Data-driven bias absorption on the absorbable pairs; counts of pairs and channels moved."""
    candidates = [p for p in pairs if _absorbable(graph, p)]
    report: dict[str, Any] = {"pairs_eligible": len(candidates), "pairs_absorbed": 0, "channels_absorbed": 0, "channels_eligible": 0}
    if not candidates:
        return report
    names = [graph.nodes[p.first].output[0] for p in candidates]
    lows = {n: np.full(graph.array(graph.nodes[p.first].input[1]).shape[0], np.inf) for n, p in zip(names, candidates)}
    for values in run_outputs(graph.commit(), graph.input_name, names, inputs):
        for n in names:
            v = values[n]
            lows[n] = np.minimum(lows[n], v.min(axis=tuple(a for a in range(v.ndim) if a != 1)))
    for name, pair in zip(names, candidates):
        c = np.maximum(lows[name], 0.0)
        report["channels_eligible"] += c.size
        if not np.any(c > 0):
            continue
        second = graph.nodes[pair.second]
        b1 = graph.array(_bias_name(graph, pair.first))
        b2 = graph.array(_bias_name(graph, pair.second))
        w2 = graph.array(second.input[1])
        idx = conv_input_channels(w2.shape, attribute(second, "group", 1))
        b1 -= c
        b2 += np.sum(w2.reshape(idx.shape + (-1,)).sum(axis=2) * c[idx], axis=1)
        report["pairs_absorbed"] += 1
        report["channels_absorbed"] += int(np.count_nonzero(c > 0))
    return report


class _FunctionPreserved(MaxAbsDiff):
    """The conversion check's criterion, with the equalization's own error (the outputs named)."""

    def __init__(self, src: Path, names: list[str], atol: float, rtol: float, overrides: Mapping[int, Mapping[str, float]] | None) -> None:
        super().__init__(src, "equalized model", atol, rtol, overrides)
        self.names = names

    def failure(self, entry: dict[str, Any]) -> str:
        return (
            f"{self.reference}: equalized model's output {entry['index']} ({self.names[entry['index']]}) differs from the float model by "
            f"{entry['max_abs_diff']:.4g} > tolerance {entry['tolerance']:.4g} on the calibration images; "
            "the equalization is not function-preserving here: report it, or run without equalization"
        )


def equalize_onnx(
    src: Path,
    dest: Path,
    manifest: Path,
    spec: InputSpec,
    atol: float,
    rtol: float,
    *,
    overrides: Mapping[int, Mapping[str, float]] | None = None,
    absorb_bias: bool = True,
    clip_headroom: float | None = None,
    by: str = "weights",
    max_samples: int | None = None,
    max_iterations: int = 200,
    tolerance: float = 1e-6,
) -> dict[str, Any]:
    """Write ``src`` with equalized (and bias-absorbed) conv pairs to ``dest``; return the report.

    The result is checked against ``src`` with onnxruntime on the first ``max_samples`` (all if
    None) calibration images of ``manifest``: every output's max |diff| must stay within
    ``atol + rtol · max|reference|`` (per-output ``overrides`` as in params.yaml), else a
    :class:`PosezooError` and ``dest`` is not written. ``tolerance`` ends the sweeps once no
    scale moves by more than that in log.

    ``clip_headroom`` (off by default) also equalizes through ``Clip(0, M)`` (ReLU6), which is
    not homogeneous, within bounds measured on the calibration images (:func:`_clip_bounds`):
    exact on them, but an unseen input whose pre-activation lands between the old and the new
    bound (``M`` and ``M · S_i``) is clipped differently. A larger headroom leaves more channels
    unscaled and fewer such surprises.

    ``by`` picks the scales: ``weights`` (Nagel's balanced weight ranges, swept to their fixed
    point) or ``activations`` (one pass from the calibration activations, see the module doc).
    """
    src, dest = Path(src), Path(dest)
    if clip_headroom is not None and clip_headroom < 1.0:
        raise PosezooError(f"{src}: clip_headroom must be at least 1 (the calibration maximum must fit under the clip), not {clip_headroom}")
    original = onnx.load(str(src))
    model = onnx.ModelProto()
    model.CopyFrom(original)
    graph = Graph(model)
    pairs, skipped = find_pairs(graph, bounded_clip=clip_headroom is not None)
    inputs = load_inputs(src, manifest, spec, max_samples)
    bounds, clip_stats = _clip_bounds(graph, pairs, inputs, clip_headroom) if clip_headroom is not None else ({}, None)
    touched = sorted({graph.nodes[k].input[1] for p in pairs for k in (p.first, p.second)})
    before = {name: graph.array(name).copy() for name in touched}
    before_ranges = [(_out_ranges(graph.array(graph.nodes[p.first].input[1])), _in_ranges(graph.array(graph.nodes[p.second].input[1]), attribute(graph.nodes[p.second], "group", 1))) for p in pairs]
    if by not in ("weights", "activations"):
        raise PosezooError(f"{src}: equalization by {by!r} is unknown; use weights or activations")
    if by == "activations":
        iterations, converged, scales = 1, True, _activation_scales(graph, pairs, inputs, bounds)
    else:
        iterations, converged, scales = _equalize(graph, pairs, bounds, max_iterations, tolerance)
    absorption = _absorb(graph, pairs, inputs) if absorb_bias else None
    graph.commit()
    ref_sess, cand_sess = session(original), session(model)
    names = [o.name for o in original.graph.output]
    _, checked = compare_outputs(
        enumerate(inputs),
        lambda x: ref_sess.run(None, {graph.input_name: x}),
        lambda x: cand_sess.run(None, {graph.input_name: x}),
        _FunctionPreserved(src, names, atol, rtol, overrides),
    )
    verification = [{"index": e["index"], "name": names[e["index"]], **{k: e[k] for k in ("max_abs_diff", "reference_max_abs", "tolerance")}} for e in checked]
    with atomic_path(dest) as tmp:
        tmp.write_bytes(save_bytes(model))

    pair_reports = []
    for p, (r1_before, r2_before), s in zip(pairs, before_ranges, scales):
        first, second = graph.nodes[p.first], graph.nodes[p.second]
        pair_reports.append({
            "first": first.name,
            "second": second.name,
            "via": [graph.nodes[k].op_type for k in p.via],
            "channels": int(s.size),
            "first_out_range_spread": {"before": _spread(r1_before), "after": _spread(_out_ranges(graph.array(first.input[1])))},
            "second_in_range_spread": {
                "before": _spread(r2_before),
                "after": _spread(_in_ranges(graph.array(second.input[1]), attribute(second, "group", 1))),
            },
            "scale_min": float(s.min()),
            "scale_max": float(s.max()),
        })

    def mean_sqnr(arrays: Mapping[str, np.ndarray], axis: int | None) -> float | None:
        values = [v for v in (sqnr_db(a, axis) for a in arrays.values()) if np.isfinite(v)]  # NaN: no rounding error at all
        return float(np.mean(values)) if values else None

    after = {name: graph.array(name) for name in touched}
    report = {
        "source": str(src),
        "by": by,
        "pairs_equalized": len(pairs),
        "skipped": dict(sorted(skipped.items())),
        "iterations": iterations,
        "converged": converged,
        "pairs": pair_reports,
        "weight_sqnr_db": {
            "layers": len(touched),
            "per_tensor": {"before": mean_sqnr(before, None), "after": mean_sqnr(after, None)},
            "per_channel": {"before": mean_sqnr(before, 0), "after": mean_sqnr(after, 0)},
        },
        "bias_absorption": absorption,
        "clip_bounds": clip_stats,
        "verification": {"samples": len(inputs), "outputs": verification},
    }
    log.info("%s: equalized %d conv pairs (skipped %s), verified on %d images", src, len(pairs), dict(skipped), len(inputs))
    return report
