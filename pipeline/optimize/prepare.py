"""The float-model transforms of one recipe, in their one order: equalization, then bias correction.

Equalization first because it changes the weights bias correction measures; bias correction last
because it corrects the int8 error of the final weights. Both read the calibration manifest only.
Used by the optimize stage for the chosen recipe and by the recipe search for every candidate, so
a candidate is scored on exactly the float model its variant would be built from.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline.optimize.bias_correction import bias_correct_onnx
from pipeline.optimize.equalize import equalize_onnx
from pipeline.quantize.recipe import Recipe
from pipeline.registry import InputSpec


@dataclass(frozen=True)
class Verification:
    """Tolerances an equalized model is verified with (``convert.*``, ``models.<name>.verify``)."""

    atol: float
    rtol: float
    overrides: Mapping[int, Mapping[str, float]]


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
            current.unlink()
        current = bc
    if current == Path(float_onnx):
        shutil.copyfile(current, dest)
    else:
        current.rename(dest)
    return report
