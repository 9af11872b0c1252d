"""Export one int8 variant (TFLite or ONNX QDQ, per-channel or per-tensor) calibrated on the manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.params import load_params, model_for
from pipeline.quantize import FORMATS, GRANULARITIES, variant_name
from pipeline.quantize.onnx import quantize_onnx
from pipeline.quantize.tflite import quantize_tflite

HELP = "export an int8 TFLite / ONNX variant (per-channel or per-tensor)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--granularity", required=True, choices=sorted(GRANULARITIES), help="weight quantization granularity")
    parser.add_argument("--format", required=True, choices=FORMATS, help="output format")
    parser.add_argument("--float-dir", required=True, type=Path, help="output directory of `posezoo convert`")
    parser.add_argument("--manifest", required=True, type=Path, help="calibration manifest")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (models.<name>)")
    parser.add_argument("--out-dir", required=True, type=Path, help="directory for <model>_<res>_int8_<pc|pt>.<format>")


def run(args: argparse.Namespace) -> None:
    spec, resolution = model_for(load_params(args.params), args.model, args.params)
    dest = args.out_dir / f"{variant_name(spec.name, resolution, args.granularity)}.{args.format}"
    per_channel = args.granularity == "per_channel"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for stale in args.out_dir.glob(f"*.{args.format}"):
        if stale != dest:
            stale.unlink()
    if args.format == "tflite":
        quantize_tflite(args.float_dir / "saved_model", dest, args.manifest, spec.input, per_channel)
    else:
        quantize_onnx(args.float_dir / "model.onnx", dest, args.manifest, spec.input, per_channel)
