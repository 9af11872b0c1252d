"""Convert a float source model to float ONNX and a float SavedModel, verifying each against the source on real images."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.atomic import atomic_path, write_json
from pipeline.convert.onnx_to_savedmodel import onnx_to_savedmodel
from pipeline.convert.tflite_to_onnx import tflite_to_onnx
from pipeline.convert.verify import compare_models
from pipeline.errors import PosezooError
from pipeline.params import get, load_params, model_for
from pipeline.source_model import model_file

HELP = "convert a source model to float ONNX + SavedModel and verify both"
log = logging.getLogger("posezoo.convert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--source-dir", required=True, type=Path, help="output directory of `posezoo fetch`")
    parser.add_argument("--manifest", required=True, type=Path, help="manifest whose images verify the conversion")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (convert.*)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (model.onnx, saved_model/)")
    parser.add_argument("--report", required=True, type=Path, help="verification report (JSON metrics)")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    spec, _ = model_for(params, args.model, args.params)
    fmt = spec.source["format"]
    if fmt != "tflite":
        raise PosezooError(
            f"{spec.path}: source format '{fmt}' has no float converter in this version (float TFLite only); "
            "pick a float TFLite source for this model"
        )
    source = model_file(args.source_dir, fmt)
    opset = int(get(params, "convert.opset", args.params))
    atol = float(get(params, "convert.atol", args.params))
    rtol = float(get(params, "convert.rtol", args.params))
    samples = int(get(params, "convert.verify_samples", args.params))
    overrides = {int(k): v for k, v in get(params, f"models.{args.model}", args.params).get("verify", {}).items()}
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        tflite_to_onnx(source, tmp / "model.onnx", opset)
        onnx_check = compare_models(source, tmp / "model.onnx", args.manifest, spec.input, atol, rtol, samples, overrides)
        onnx_to_savedmodel(tmp / "model.onnx", tmp / "saved_model", args.manifest)
        sm_check = compare_models(source, tmp / "saved_model", args.manifest, spec.input, atol, rtol, samples, overrides)
    report = {
        name: {
            "max_abs_diff": max(o["max_abs_diff"] for o in check["outputs"]),
            "keypoints_max_abs_diff": check["outputs"][spec.keypoint_output]["max_abs_diff"],
            "outputs": check["outputs"],
        }
        for name, check in (("onnx", onnx_check), ("saved_model", sm_check))
    }
    report |= {
        "samples": onnx_check["samples"],
        "atol": atol,
        "rtol": rtol,
    }
    write_json(args.report, report)
    log.info("converted and verified %s (onnx max diff %.3g, saved_model max diff %.3g)", spec.name, report["onnx"]["max_abs_diff"], report["saved_model"]["max_abs_diff"])
