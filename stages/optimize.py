"""Prepare the float model one quantization recipe starts from: cross-layer equalization (+ bias
absorption) and empirical bias correction, each verified, then the SavedModel for the TFLite path,
the shared activation ranges (non-MinMax calibration) and the float fallback layers.

A recipe without either transform passes the converted float model through unchanged, so the
default per-channel variants are exactly what they were without this stage.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_path, write_json
from pipeline.convert.onnx_to_savedmodel import onnx_to_savedmodel
from pipeline.convert.verify import compare_models, verify_settings
from pipeline.optimize.bias_correction import bias_correct_onnx
from pipeline.optimize.equalize import equalize_onnx
from pipeline.params import load_params, model_for
from pipeline.quantize.fallback import describe, fallback_cost, search_fallback
from pipeline.quantize.ranges import compute_ranges, write_ranges
from pipeline.quantize.recipe import FLOAT_NODES, RANGES, recipe_for

HELP = "equalize / bias-correct the float model for one quantization recipe (verified)"
log = logging.getLogger("posezoo.optimize")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--scheme", required=True, help="the scheme whose recipe applies (quantize.recipes.<scheme>)")
    parser.add_argument("--float-dir", required=True, type=Path, help="output directory of `posezoo convert`")
    parser.add_argument("--manifest", required=True, type=Path, help="calibration manifest (statistics and verification images)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (quantize.recipes, convert tolerances)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (model.onnx, saved_model/)")
    parser.add_argument("--report", required=True, type=Path, help="JSON report of the transforms")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    spec, _ = model_for(params, args.model, args.params)
    recipe = recipe_for(params, args.scheme, args.params)
    atol, rtol, samples, overrides = verify_settings(params, args.model, args.params)
    report: dict[str, Any] = {"model": spec.name, "scheme": args.scheme, "weights": recipe.weights, "equalize": recipe.equalize, "bias_correction": recipe.bias_correction}
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        current = args.float_dir / "model.onnx"
        if recipe.equalize:
            report["equalization"] = equalize_onnx(
                current, tmp / "equalized.onnx", args.manifest, spec.input, atol, rtol, overrides=overrides, clip_headroom=recipe.clip_headroom
            )
            current = tmp / "equalized.onnx"
        if recipe.bias_correction:
            report["bias_correction_report"] = bias_correct_onnx(current, tmp / "corrected.onnx", args.manifest, spec.input, recipe.per_channel)
            current = tmp / "corrected.onnx"
        if current == args.float_dir / "model.onnx":
            shutil.copyfile(current, tmp / "model.onnx")
            shutil.copytree(args.float_dir / "saved_model", tmp / "saved_model")
        else:
            current.rename(tmp / "model.onnx")
            for leftover in (tmp / "equalized.onnx", tmp / "corrected.onnx"):
                leftover.unlink(missing_ok=True)
            onnx_to_savedmodel(tmp / "model.onnx", tmp / "saved_model", args.manifest)
            check = compare_models(tmp / "model.onnx", tmp / "saved_model", args.manifest, spec.input, atol, rtol, samples, overrides)
            report["saved_model_max_abs_diff"] = max(o["max_abs_diff"] for o in check["outputs"])
        # Shared activation ranges are computed here, once per model and scheme, and read by both
        # exporters (and the fallback search), so the TFLite and ONNX variants use one table.
        table = compute_ranges(tmp / "model.onnx", args.manifest, spec.input, recipe.config()) if recipe.config().shared_ranges else None
        if table is not None:
            write_ranges(table, tmp / RANGES)
        float_nodes: list[str] = []
        if recipe.fallback:
            reference = recipe_for(params, recipe.fallback.get("reference", "per_channel"), args.params)
            search = search_fallback(
                tmp / "model.onnx",
                args.manifest,
                spec,
                recipe.config(),
                reference.config(),
                float(recipe.fallback["budget"]),
                int(recipe.fallback.get("max_layers", 64)),
                ranges=table,
            )
            float_nodes = search["float_nodes"]
            report["fallback"] = {**search, "cost": fallback_cost(tmp / "model.onnx", float_nodes)}
            log.info("%s %s: %s", spec.name, args.scheme, describe(search))
        write_json(tmp / FLOAT_NODES, {"float_nodes": float_nodes})
    write_json(args.report, report)
    log.info("prepared %s for %s (equalize %s, bias correction %s)", spec.name, args.scheme, recipe.equalize, recipe.bias_correction)
