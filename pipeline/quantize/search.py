"""Per-model recipe search: among a scheme's candidate recipes, the one that drifts least on validation ROIs.

A scheme fixes its contract (weight granularity, activation width, fallback: what the target
runs); candidates vary what the target does not see — the float-model transforms (equalization
with or without ReLU6 headroom, bias correction) and the activation calibration method. Each
candidate is scored by the drift of its ONNX QDQ export against the float model on the
**validation split** of the model's subject ROIs (never calibration or held-out subjects); the
formats other than ONNX are built for the winner only, by the quantize stages.

Cost control: candidates sharing transforms share one prepared float model (the transforms are
the expensive part: bias correction of BlazePose takes minutes), the search stops at the first
candidate within ``stop_norm`` of float (drift as a fraction of the input size: a recipe that
close has nothing left to win), and a candidate one of the scheme's formats cannot export (e.g.
non-MinMax ranges for an NNCF OpenVINO IR) is listed as excluded, not run. DVC caches the whole
stage, so an unchanged model × scheme is never searched twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import PosezooError
from pipeline.evaluate.drift import measure_drift
from pipeline.quantize.export import check_exportable
from pipeline.quantize.onnx import quantize_onnx
from pipeline.quantize.ranges import RangeTable, compute_ranges
from pipeline.quantize.recipe import Recipe
from pipeline.registry import ModelSpec

log = logging.getLogger(__name__)

#: Prepares a recipe's float model: (recipe, destination ONNX) -> transform reports.
Prepare = Callable[[Recipe, Path], dict[str, Any]]


@dataclass
class SearchResult:
    """The chosen candidate, its prepared model and report, and the table of every candidate."""

    chosen: int
    prepared: Path
    transforms: dict[str, Any]
    ranges: RangeTable | None
    table: list[dict[str, Any]] = field(default_factory=list)


def exclusion(recipe: Recipe, formats: list[str]) -> str | None:
    """Why one of ``formats`` cannot export ``recipe`` (None: all can)."""
    for fmt in formats:
        try:
            check_exportable(fmt, recipe.config(), fmt)
        except PosezooError as err:
            return str(err).split(";")[0]
    return None


def search_recipes(
    candidates: list[Recipe],
    float_onnx: Path,
    calibration: Path,
    validation: Path,
    spec: ModelSpec,
    prepare: Prepare,
    work: Path,
    formats: list[str],
    stop_norm: float,
) -> SearchResult:
    """Score ``candidates`` in order on ``validation`` (see the module docstring); ``work`` keeps the prepared models."""
    prepared: dict[tuple[Any, ...], tuple[Path, dict[str, Any]]] = {}
    ranges: dict[tuple[Any, ...], RangeTable | None] = {}
    table: list[dict[str, Any]] = []
    best: tuple[float, int] | None = None
    for index, recipe in enumerate(candidates):
        row: dict[str, Any] = {"candidate": index, "recipe": recipe.as_params(), "label": recipe.describe()}
        table.append(row)
        reason = exclusion(recipe, formats)
        if reason:
            row |= {"status": "excluded", "reason": reason}
            continue
        if best is not None and best[0] <= stop_norm:
            row |= {"status": "not run", "reason": f"candidate {best[1]} is within {stop_norm:g} of the input size of float"}
            continue
        start = time.perf_counter()
        if recipe.transforms not in prepared:
            path = work / f"prepared{len(prepared)}.onnx"
            prepared[recipe.transforms] = (path, prepare(recipe, path))
            row["prepare_seconds"] = round(time.perf_counter() - start, 1)
        path = prepared[recipe.transforms][0]
        config = recipe.config()
        key = (recipe.transforms, config.calibration, config.percentile, config.activation_bits)
        if key not in ranges:
            ranges[key] = compute_ranges(path, calibration, spec.input, config) if config.shared_ranges else None
        export = work / f"candidate{index}.onnx"
        quantize_onnx(path, export, calibration, spec.input, config, ranges=ranges[key])
        drift, _ = measure_drift(spec, float_onnx, export, validation)
        export.unlink()
        row |= {
            "status": "scored",
            "validation_mean_px": round(drift["mean_px"], 4),
            "validation_p95_px": round(drift["p95_px"], 4),
            "validation_mean_norm": round(drift["mean_norm"], 6),
            "validation_samples": drift["samples"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        log.info("candidate %d (%s): validation drift %.3f px", index, row["label"], drift["mean_px"])
        if best is None or drift["mean_norm"] < best[0]:
            best = (drift["mean_norm"], index)
    if best is None:
        raise PosezooError(f"no candidate recipe of {spec.name} can be exported to every format of quantize.formats {formats}; see quantize.search.candidates")
    winner = candidates[best[1]]
    table[best[1]]["chosen"] = True
    path, transforms = prepared[winner.transforms]
    config = winner.config()
    return SearchResult(best[1], path, transforms, ranges[(winner.transforms, config.calibration, config.percentile, config.activation_bits)], table)
