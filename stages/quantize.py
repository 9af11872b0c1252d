"""Export one integer variant (TFLite, ONNX QDQ or OpenVINO IR) of a quantization scheme, calibrated on the manifest.

The recipe (weight granularity, calibration method, activation width) comes from `posezoo
optimize`, which chose the model's recipe (``recipe.json``: searched, a per-model override or the scheme's own),
applied its float-model transforms, chose its float fallback layers (``float_nodes.json``) and
computed its shared activation ranges (``ranges.json``). Beside the model a ``<variant>.quant.json``
(:mod:`pipeline.quantize.sidecar`) records how it was made, for `posezoo evaluate` and `posezoo recommend`.

``--format openvino`` writes an int8 OpenVINO IR (``<variant>.xml`` + ``<variant>.bin``) with
NNCF from the same float ONNX (:mod:`pipeline.quantize.openvino`); it takes 8-bit recipes only,
imposes the shared percentile / entropy / MSE ranges on NNCF's quantizers, and its sidecar adds
an ``nncf`` block with NNCF's settings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.formats import VARIANT_FORMATS, variant_format
from pipeline.params import load_params, model_for
from pipeline.quantize import variant_name
from pipeline.quantize.export import check_exportable, export_variant
from pipeline.quantize.ranges import read_ranges
from pipeline.quantize.recipe import RANGES, chosen_float_nodes, chosen_recipe
from pipeline.quantize.sidecar import sidecar_path, write_sidecar

HELP = "export an int8 (or 16x8) TFLite / ONNX variant, or an int8 OpenVINO IR, of a quantization scheme"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--scheme", required=True, help="quantization scheme (params.yaml quantize.schemes / quantize.recipes)")
    parser.add_argument("--format", required=True, choices=VARIANT_FORMATS, help="output format")
    parser.add_argument("--float-dir", required=True, type=Path, help="output directory of `posezoo optimize` (or `posezoo convert`)")
    parser.add_argument("--manifest", required=True, type=Path, help="calibration manifest")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (models.<name>, quantize)")
    parser.add_argument("--out-dir", required=True, type=Path, help="directory for <variant>.<tflite|onnx|xml (+ .bin)> and <variant>.quant.json")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    spec, resolution = model_for(params, args.model, args.params)
    recipe, origin = chosen_recipe(params, args.scheme, args.float_dir, args.params)
    config = recipe.config(chosen_float_nodes(args.float_dir))
    stem = variant_name(spec.name, resolution, recipe.weights, config)
    stem = f"{stem}_{recipe.tag}" if recipe.tag else stem
    where = f"{args.params}: quantize.recipes.{args.scheme}"
    check_exportable(args.format, config, where)  # before the old outputs are removed
    dest = args.out_dir / f"{stem}{variant_format(args.format).suffix}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    keep = {p.name for p in (*variant_format(args.format).files(dest), sidecar_path(dest))}
    for stale in args.out_dir.iterdir():
        if stale.name not in keep:
            stale.unlink()
    table = read_ranges(args.float_dir / RANGES) if (args.float_dir / RANGES).is_file() else None
    extra = export_variant(args.format, args.float_dir, dest, args.manifest, spec.input, config, where, table)
    write_sidecar(dest, args.scheme, recipe, origin, config, extra)
