"""Export one integer variant (TFLite, ONNX QDQ or OpenVINO IR) of a quantization scheme, calibrated on the manifest.

The recipe (weight granularity, calibration method, activation width) comes from `posezoo
optimize`, which chose the model's recipe (``recipe.json``: searched, a per-model override or the scheme's own),
applied its float-model transforms, chose its float fallback layers (``float_nodes.json``) and
computed its shared activation ranges (``ranges.json``). Beside the model a ``<variant>.quant.json`` records how it was made, for
`posezoo evaluate` and `posezoo recommend`.

``--format openvino`` writes an int8 OpenVINO IR (``<variant>.xml`` + ``<variant>.bin``) with
NNCF from the same float ONNX (:mod:`pipeline.quantize.openvino`); it takes 8-bit recipes only,
imposes the shared percentile / entropy / MSE ranges on NNCF's quantizers, and its sidecar adds
an ``nncf`` block with NNCF's settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.params import load_params, model_for
from pipeline.quantize import FORMATS, variant_name
from pipeline.quantize.onnx import quantize_onnx
from pipeline.quantize.openvino import check_config, export_openvino_int8
from pipeline.quantize.ranges import read_ranges
from pipeline.quantize.recipe import FLOAT_NODES, QUANT_SIDECAR, RANGES, chosen_recipe
from pipeline.quantize.tflite import quantize_tflite

HELP = "export an int8 (or 16x8) TFLite / ONNX variant, or an int8 OpenVINO IR, of a quantization scheme"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--scheme", required=True, help="quantization scheme (params.yaml quantize.schemes / quantize.recipes)")
    parser.add_argument("--format", required=True, choices=tuple(FORMATS), help="output format")
    parser.add_argument("--float-dir", required=True, type=Path, help="output directory of `posezoo optimize` (or `posezoo convert`)")
    parser.add_argument("--manifest", required=True, type=Path, help="calibration manifest")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (models.<name>, quantize)")
    parser.add_argument("--out-dir", required=True, type=Path, help="directory for <variant>.<tflite|onnx|xml (+ .bin)> and <variant>.quant.json")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    spec, resolution = model_for(params, args.model, args.params)
    recipe, origin = chosen_recipe(params, args.scheme, args.float_dir, args.params)
    chosen = args.float_dir / FLOAT_NODES
    float_nodes = tuple(json.loads(chosen.read_text())["float_nodes"]) if chosen.is_file() else ()
    config = recipe.config(float_nodes)
    stem = variant_name(spec.name, resolution, recipe.weights, config)
    stem = f"{stem}_{recipe.tag}" if recipe.tag else stem
    where = f"{args.params}: quantize.recipes.{args.scheme}"
    if args.format == "openvino":
        check_config(config, where)  # before the old outputs are removed
    dest = args.out_dir / f"{stem}{FORMATS[args.format]}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for stale in args.out_dir.iterdir():
        if stale.name not in (dest.name, f"{stem}{QUANT_SIDECAR}") and not (args.format == "openvino" and stale.name == f"{stem}.bin"):
            stale.unlink()
    table = read_ranges(args.float_dir / RANGES) if (args.float_dir / RANGES).is_file() else None
    extra: dict[str, object] = {}
    if args.format == "tflite":
        quantize_tflite(args.float_dir / "saved_model", dest, args.manifest, spec.input, config, float_onnx=args.float_dir / "model.onnx", ranges=table)
    elif args.format == "openvino":
        extra["nncf"] = export_openvino_int8(args.float_dir / "model.onnx", dest, args.manifest, spec.input, config, where, ranges=table)
    else:
        quantize_onnx(args.float_dir / "model.onnx", dest, args.manifest, spec.input, config, ranges=table)
    write_json(
        args.out_dir / f"{stem}{QUANT_SIDECAR}",
        {
            "scheme": args.scheme,
            "granularity": recipe.weights,
            "activation_bits": config.activation_bits,
            "calibration": config.calibration,
            **({"percentile": config.percentile} if config.calibration == "percentile" else {}),
            "equalize": recipe.equalize,
            "bias_correction": recipe.bias_correction,
            **({"clip_headroom": recipe.clip_headroom} if recipe.clip_headroom is not None else {}),
            "recipe": recipe.as_params(),
            "recipe_source": origin,
            "float_layers": len(config.float_nodes),
            "float_nodes": list(config.float_nodes),
            **extra,
        },
    )
