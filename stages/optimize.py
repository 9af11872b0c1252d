"""Prepare the float model one quantization scheme starts from, choosing its recipe per model.

The recipe is ``models.<name>.recipes.<scheme>`` when set (an explicit choice), else the best of
``quantize.search.candidates.<scheme>`` on the model's validation ROIs (:mod:`pipeline.quantize.search`),
else ``quantize.recipes.<scheme>``. The chosen recipe's transforms (:mod:`pipeline.optimize.prepare`)
give ``model.onnx``; then the SavedModel for the TFLite path, the shared activation ranges
(non-MinMax calibration) and the float fallback layers. ``recipe.json`` records the choice for the
quantize stages; the report (metrics) holds the candidates' table.

A recipe without transforms passes the converted float model through unchanged, so such variants
are exactly what they were without this stage.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_path, write_json
from pipeline.convert.onnx_to_savedmodel import onnx_to_savedmodel
from pipeline.convert.verify import compare_models, verify_settings
from pipeline.errors import PosezooError
from pipeline.evaluate.drift import manifest_provenance
from pipeline.optimize.prepare import Verification, prepare_float
from pipeline.params import get, load_params, model_for
from pipeline.quantize.fallback import describe, fallback_cost, search_fallback
from pipeline.quantize.ranges import compute_ranges, write_ranges
from pipeline.quantize.recipe import FLOAT_NODES, RANGES, RECIPE, candidates_for
from pipeline.quantize.search import search_recipes

HELP = "choose the model's recipe for a scheme (search on validation ROIs) and prepare its float model (verified)"
log = logging.getLogger("posezoo.optimize")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--scheme", required=True, help="the scheme whose recipe applies (quantize.recipes.<scheme>)")
    parser.add_argument("--float-dir", required=True, type=Path, help="output directory of `posezoo convert`")
    parser.add_argument("--manifest", required=True, type=Path, help="calibration manifest (statistics and verification images)")
    parser.add_argument("--validation", type=Path, help="validation manifest the recipe search scores candidates on (needed when it has several)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (quantize.recipes, quantize.search, convert tolerances)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (model.onnx, saved_model/, recipe.json)")
    parser.add_argument("--report", required=True, type=Path, help="JSON report of the search and the transforms")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    spec, _ = model_for(params, args.model, args.params)
    candidates, origin = candidates_for(params, args.model, args.scheme, args.params)
    atol, rtol, samples, overrides = verify_settings(params, args.model, args.params)
    check = Verification(atol, rtol, overrides)
    float_onnx = args.float_dir / "model.onnx"
    if origin == "search" and args.validation is None:
        raise PosezooError(f"{args.params}: quantize.search.candidates.{args.scheme} lists {len(candidates)} recipes; pass --validation (the model's validation.json) to search them")
    report: dict[str, Any] = {"model": spec.name, "scheme": args.scheme, "recipe_source": origin}
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        if origin == "search":
            stop_norm = float(get(params, "quantize.search.stop_norm", args.params))
            with tempfile.TemporaryDirectory(prefix="posezoo-search-", dir=tmp) as work:
                started = time.perf_counter()
                result = search_recipes(
                    candidates, float_onnx, args.manifest, args.validation, spec,
                    lambda r, dest: prepare_float(r, float_onnx, dest, args.manifest, spec.input, check),
                    Path(work), list(get(params, "quantize.formats", args.params)), stop_norm,
                )
                recipe, transforms, table = candidates[result.chosen], result.transforms, result.ranges
                result.prepared.rename(tmp / "model.onnx")
            report["search"] = {"validation": manifest_provenance(args.validation), "stop_norm": stop_norm, "seconds": round(time.perf_counter() - started, 1), "candidates": result.table}
            log.info("%s %s: chose candidate %d of %d (%s)", spec.name, args.scheme, result.chosen, len(candidates), recipe.describe())
        else:
            recipe = candidates[0]
            transforms = prepare_float(recipe, float_onnx, tmp / "model.onnx", args.manifest, spec.input, check)
            table = compute_ranges(tmp / "model.onnx", args.manifest, spec.input, recipe.config()) if recipe.config().shared_ranges else None
        report |= {"recipe": recipe.as_params(), "weights": recipe.weights, "equalize": recipe.equalize, "bias_correction": recipe.bias_correction, **transforms}
        if transforms:
            onnx_to_savedmodel(tmp / "model.onnx", tmp / "saved_model", args.manifest)
            check_saved = compare_models(tmp / "model.onnx", tmp / "saved_model", args.manifest, spec.input, atol, rtol, samples, overrides)
            report["saved_model_max_abs_diff"] = max(o["max_abs_diff"] for o in check_saved["outputs"])
        else:
            shutil.copytree(args.float_dir / "saved_model", tmp / "saved_model")
        # Shared activation ranges are computed once per model and scheme and read by both
        # exporters (and the fallback search), so the TFLite and ONNX variants use one table.
        if table is not None:
            write_ranges(table, tmp / RANGES)
        float_nodes: list[str] = []
        if recipe.fallback:
            reference = recipe.reference()
            found = search_fallback(
                tmp / "model.onnx",
                args.manifest,
                spec,
                recipe.config(),
                reference.config(),
                float(recipe.fallback["budget"]),
                int(recipe.fallback.get("max_layers", 64)),
                ranges=table,
            )
            float_nodes = found["float_nodes"]
            report["fallback"] = {**found, "cost": fallback_cost(tmp / "model.onnx", float_nodes)}
            log.info("%s %s: %s", spec.name, args.scheme, describe(found))
        write_json(tmp / FLOAT_NODES, {"float_nodes": float_nodes})
        write_json(tmp / RECIPE, {"scheme": args.scheme, "source": origin, "recipe": recipe.as_params()})
    write_json(args.report, report)
    log.info("prepared %s for %s: %s (%s)", spec.name, args.scheme, recipe.describe(), origin)

