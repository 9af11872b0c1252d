"""Convert a source model to float ONNX and a float SavedModel, verifying each on real images.

A published int8 TFLite or QDQ ONNX source is dequantized first (the requantization path): its
float ONNX is judged against the int8 original, then the usual exports run on it. An OpenVINO IR
(OMZ's ``.xml`` + ``.bin``) is its own float reference: the ONNX and the SavedModel are judged
against the IR run by OpenVINO's CPU plugin at f32 precision, like a float TFLite. A Keras
``.keras`` file is converted with tf2onnx and is likewise the reference of both.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_path, write_json
from pipeline.convert.dequantize import dequantize_tflite_to_onnx, verify_dequantized
from pipeline.convert.dequantize_qdq import dequantize_qdq_onnx
from pipeline.convert.keras_to_onnx import keras_to_onnx
from pipeline.convert.onnx_to_savedmodel import onnx_to_savedmodel
from pipeline.convert.openvino_to_onnx import openvino_to_onnx
from pipeline.convert.reshape import input_size, reshape_input
from pipeline.convert.tflite_to_onnx import tflite_to_onnx
from pipeline.convert.verify import compare_models, verify_settings
from pipeline.errors import PosezooError
from pipeline.params import get, load_params, model_for
from pipeline.source_model import model_file

HELP = "convert a source model (float or published int8 TFLite, QDQ int8 ONNX, OpenVINO IR, Keras) to float ONNX + SavedModel and verify both"
#: Source formats with a float converter: float TFLite, int8 TFLite and QDQ int8 ONNX (dequantized:
#: requantization), OpenVINO IR (FP32 or FP16 weights) and Keras (.keras, Keras 2 or 3).
CONVERTIBLE = ("tflite", "tflite-int8", "onnx-qdq", "openvino-ir", "keras")
#: Published int8 formats, dequantized to the float model by these functions.
DEQUANTIZERS = {"tflite-int8": dequantize_tflite_to_onnx, "onnx-qdq": dequantize_qdq_onnx}
log = logging.getLogger("posezoo.convert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--source-dir", required=True, type=Path, help="output directory of `posezoo fetch`")
    parser.add_argument("--manifest", required=True, type=Path, help="manifest whose images verify the conversion")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (convert.*)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (model.onnx, saved_model/)")
    parser.add_argument("--report", required=True, type=Path, help="verification report (JSON metrics)")


def _summary(check: dict[str, Any], keypoint_output: int) -> dict[str, Any]:
    return {
        "max_abs_diff": max(o["max_abs_diff"] for o in check["outputs"]),
        "keypoints_max_abs_diff": check["outputs"][keypoint_output]["max_abs_diff"],
        "outputs": check["outputs"],
    }


def _resize(onnx_path: Path, resolution: int, report: dict[str, Any]) -> None:
    """Resolution sweep: give the float model the asked input size when the source has another.

    ``model_for`` already checked that the source lists this resolution (fully convolutional);
    the reshaped model is then verified against the source run at the same size.
    """
    native = input_size(onnx_path)
    if native != (resolution, resolution):
        reshape_input(onnx_path, resolution)
        report["reshaped_from"] = list(native)
        log.info("reshaped the float model from %dx%d to %dx%d", *native, resolution, resolution)


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    spec, resolution = model_for(params, args.model, args.params)
    fmt = spec.source["format"]
    if fmt == "pytorch":
        # No Ultralytics export here: a CPU torch has no matching CPU torchvision build on PyPI.
        int8 = [s["id"] for s in spec.raw["sources"] if s["format"] in DEQUANTIZERS and resolution in spec.source_resolutions(s)]
        raise PosezooError(
            f"{spec.path}: source '{spec.source['id']}' is a PyTorch checkpoint and the PyTorch export path is not available here; "
            f"use a published int8 source instead (models.{args.model}.source: {' or '.join(int8) if int8 else '<a tflite-int8 or onnx-qdq source of the entry>'} in params.yaml)"
        )
    if fmt not in CONVERTIBLE:
        raise PosezooError(
            f"{spec.path}: source format '{fmt}' has no float converter in this version ({', '.join(CONVERTIBLE)} only); "
            "pick another of the model's sources with models.<name>.source in params.yaml"
        )
    source = model_file(args.source_dir, fmt)
    opset = int(get(params, "convert.opset", args.params))
    atol, rtol, samples, overrides = verify_settings(params, args.model, args.params)
    model_params = get(params, f"models.{args.model}", args.params)
    report: dict[str, Any] = {"source": spec.source["id"], "source_format": fmt, "atol": atol, "rtol": rtol}
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        onnx_path = tmp / "model.onnx"
        if fmt == "tflite":
            tflite_to_onnx(source, onnx_path, opset)
            _resize(onnx_path, resolution, report)
            report["onnx"] = _summary(compare_models(source, onnx_path, args.manifest, spec.input, atol, rtol, samples, overrides), spec.keypoint_output)
            float_reference = source
        elif fmt == "openvino-ir":
            report["openvino_ir"] = openvino_to_onnx(source, onnx_path, opset)
            _resize(onnx_path, resolution, report)
            report["onnx"] = _summary(compare_models(source, onnx_path, args.manifest, spec.input, atol, rtol, samples, overrides), spec.keypoint_output)
            float_reference = source
        elif fmt == "keras":
            report["keras"] = keras_to_onnx(source, onnx_path, opset)
            _resize(onnx_path, resolution, report)
            report["onnx"] = _summary(compare_models(source, onnx_path, args.manifest, spec.input, atol, rtol, samples, overrides), spec.keypoint_output)
            float_reference = source
        else:
            # A published int8 file (TFLite or QDQ ONNX): dequantize, judge the float model against
            # the int8 original in output quantization steps (they differ by the int8 activation
            # error), then judge the SavedModel against the float ONNX like any conversion.
            mean_steps = float(model_params.get("dequantized_mean_steps", get(params, "convert.dequantized_mean_steps", args.params)))
            info = DEQUANTIZERS[fmt](source, onnx_path, opset)
            report["dequantized"] = verify_dequantized(source, onnx_path, args.manifest, spec.input, info, mean_steps, samples)
            float_reference = onnx_path
        onnx_to_savedmodel(onnx_path, tmp / "saved_model", args.manifest)
        sm_check = compare_models(float_reference, tmp / "saved_model", args.manifest, spec.input, atol, rtol, samples, overrides)
        report["saved_model"] = _summary(sm_check, spec.keypoint_output)
        report["samples"] = sm_check["samples"]
    write_json(args.report, report)
    log.info("converted and verified %s from %s (%s)", spec.name, spec.source["id"], fmt)
