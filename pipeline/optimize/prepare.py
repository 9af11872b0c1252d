"""The float model one quantization scheme starts from, prepared in one order.

:func:`prepare_scheme` (the optimize stage) chooses the recipe — searched on validation ROIs
(:mod:`pipeline.quantize.search`) or the one candidate — then writes, in this order: the recipe's
transformed float ONNX, the SavedModel the TFLite path converts, the shared activation ranges
(non-MinMax calibration), the float fallback layers and the record of the choice, i.e. everything
the quantize stages of the scheme read.

:func:`prepare_float` is the transforms of one recipe, in their one order: equalization, then bias
correction. Equalization first because it changes the weights bias correction measures; bias
correction last because it corrects the int8 error of the final weights. Both read the
calibration manifest only. The recipe search calls it for every candidate, so a candidate is
scored on exactly the float model its variant would be built from.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline.convert.onnx_to_savedmodel import onnx_to_savedmodel
from pipeline.convert.verify import compare_models
from pipeline.evaluate.drift import manifest_provenance
from pipeline.optimize.bias_correction import bias_correct_onnx
from pipeline.optimize.equalize import equalize_onnx
from pipeline.quantize.fallback import describe, fallback_cost, search_fallback
from pipeline.quantize.ranges import compute_ranges, write_ranges
from pipeline.quantize.recipe import RANGES, Recipe, write_chosen
from pipeline.quantize.search import search_recipes
from pipeline.registry import InputSpec, ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verification:
    """Tolerances a transformed model is verified with: the equalized ONNX, then its SavedModel (``convert.*``, ``models.<name>.verify``)."""

    atol: float
    rtol: float
    overrides: Mapping[int, Mapping[str, float]]


@dataclass(frozen=True)
class SearchSettings:
    """What a recipe search needs beyond the candidates (``quantize.search``, ``quantize.formats``)."""

    validation: Path  # the model's validation manifest: candidates are scored on it
    formats: list[str]  # a candidate one of them cannot export is excluded
    stop_norm: float  # stop at the first candidate within this fraction of the input size of float


def prepare_float(recipe: Recipe, float_onnx: Path, dest: Path, manifest: Path, spec: InputSpec, check: Verification) -> dict[str, Any]:
    """Write ``recipe``'s transformed float model to ``dest``; returns the transforms' reports.

    A recipe without transforms copies ``float_onnx`` unchanged (byte-identical), so variants
    without transforms are exactly what they were before the optimize stage existed.
    """
    report: dict[str, Any] = {}
    current = Path(float_onnx)
    work = Path(dest).parent
    if recipe.equalize:
        eq = work / f"{Path(dest).stem}.equalized.onnx"
        report["equalization"] = equalize_onnx(current, eq, manifest, spec, check.atol, check.rtol, overrides=check.overrides, clip_headroom=recipe.clip_headroom, by=recipe.equalize_by)
        current = eq
    if recipe.bias_correction:
        bc = work / f"{Path(dest).stem}.corrected.onnx"
        report["bias_correction_report"] = bias_correct_onnx(current, bc, manifest, spec, recipe.per_channel)
        if current != Path(float_onnx):
            # the equalized model is a temporary file: name what it was made from, not its random path
            report["bias_correction_report"]["source"] = f"{float_onnx} (equalized)"
            current.unlink()
        current = bc
    if current == Path(float_onnx):
        shutil.copyfile(current, dest)
    else:
        current.rename(dest)
    return report


def prepare_scheme(
    scheme: str,
    candidates: list[Recipe],
    origin: str,
    float_dir: Path,
    out: Path,
    manifest: Path,
    spec: ModelSpec,
    check: Verification,
    samples: int,
    search: SearchSettings | None,
) -> tuple[Recipe, dict[str, Any]]:
    """Fill the empty directory ``out`` for the quantize stages of ``scheme``; (chosen recipe, report).

    ``candidates`` and ``origin`` are :func:`~pipeline.quantize.recipe.candidates_for`'s; ``search``
    is given when ``origin`` is "search". ``samples`` verification images check the SavedModel of
    a transformed model against it.
    """
    float_onnx = Path(float_dir) / "model.onnx"
    report: dict[str, Any] = {"model": spec.name, "scheme": scheme, "recipe_source": origin}
    if search is not None:
        with tempfile.TemporaryDirectory(prefix="posezoo-search-", dir=out) as work:
            started = time.perf_counter()
            result = search_recipes(
                candidates, float_onnx, manifest, search.validation, spec,
                lambda r, dest: prepare_float(r, float_onnx, dest, manifest, spec.input, check),
                Path(work), search.formats, search.stop_norm,
            )
            recipe, transforms, table = candidates[result.chosen], result.transforms, result.ranges
            result.prepared.rename(out / "model.onnx")
        report["search"] = {"validation": manifest_provenance(search.validation), "stop_norm": search.stop_norm, "seconds": round(time.perf_counter() - started, 1), "candidates": result.table}
        log.info("%s %s: chose candidate %d of %d (%s)", spec.name, scheme, result.chosen, len(candidates), recipe.describe())
    else:
        recipe = candidates[0]
        transforms = prepare_float(recipe, float_onnx, out / "model.onnx", manifest, spec.input, check)
        table = compute_ranges(out / "model.onnx", manifest, spec.input, recipe.config()) if recipe.config().shared_ranges else None
    report |= {"recipe": recipe.as_params(), "weights": recipe.weights, "equalize": recipe.equalize, "bias_correction": recipe.bias_correction, **transforms}
    if transforms:
        onnx_to_savedmodel(out / "model.onnx", out / "saved_model", manifest)
        check_saved = compare_models(out / "model.onnx", out / "saved_model", manifest, spec.input, check.atol, check.rtol, samples, check.overrides)
        report["saved_model_max_abs_diff"] = max(o["max_abs_diff"] for o in check_saved["outputs"])
    else:
        shutil.copytree(Path(float_dir) / "saved_model", out / "saved_model")
    # Shared activation ranges are computed once per model and scheme and read by both
    # exporters (and the fallback search), so the TFLite and ONNX variants use one table.
    if table is not None:
        write_ranges(table, out / RANGES)
    float_nodes: list[str] = []
    if recipe.fallback:
        budget, max_layers = recipe.fallback_limits()
        found = search_fallback(out / "model.onnx", manifest, spec, recipe.config(), recipe.reference().config(), budget, max_layers, ranges=table)
        float_nodes = found["float_nodes"]
        report["fallback"] = {**found, "cost": fallback_cost(out / "model.onnx", float_nodes)}
        log.info("%s %s: %s", spec.name, scheme, describe(found))
    write_chosen(out, scheme, recipe, origin, float_nodes)
    return recipe, report
