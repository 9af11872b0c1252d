"""Prepare the float model one quantization scheme starts from, choosing its recipe per model.

The recipe is ``models.<name>.recipes.<scheme>`` when set (an explicit choice), else the best of
``quantize.search.candidates.<scheme>`` on the model's validation ROIs, else
``quantize.recipes.<scheme>`` (:func:`~pipeline.quantize.recipe.candidates_for`);
:func:`~pipeline.optimize.prepare.prepare_scheme` writes what the quantize stages read. The report
(metrics) holds the candidates' table and the transforms' reports.

A recipe without transforms passes the converted float model through unchanged, so such variants
are exactly what they were without this stage.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.atomic import atomic_path, write_json
from pipeline.convert.verify import verify_settings
from pipeline.errors import PosezooError
from pipeline.optimize.prepare import SearchSettings, Verification, prepare_scheme
from pipeline.params import get, load_params, model_for
from pipeline.quantize.recipe import candidates_for

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
    search = None
    if origin == "search":
        if args.validation is None:
            raise PosezooError(f"{args.params}: quantize.search.candidates.{args.scheme} lists {len(candidates)} recipes; pass --validation (the model's validation.json) to search them")
        stop_norm = float(get(params, "quantize.search.stop_norm", args.params))
        search = SearchSettings(args.validation, list(get(params, "quantize.formats", args.params)), stop_norm)
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        recipe, report = prepare_scheme(args.scheme, candidates, origin, args.float_dir, tmp, args.manifest, spec, Verification(atol, rtol, overrides), samples, search)
    write_json(args.report, report)
    log.info("prepared %s for %s: %s (%s)", spec.name, args.scheme, recipe.describe(), origin)
