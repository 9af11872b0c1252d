"""Time each posezoo stage against calling the same tools directly, in the same run.

For every model (default: the embedded default pipeline's models) this measures:
- convert:  posezoo's tflite_to_onnx + onnx_to_savedmodel with both verifications, against bare
            ``tf2onnx.convert.from_tflite`` + ``onnx2tf.convert``;
- quantize: posezoo's TFLite / ONNX int8 exports (per-channel) reading the manifest, against
            bare ``TFLiteConverter`` / ``quant_pre_process`` + ``quantize_static`` fed from
            arrays already in memory;
- evaluate: posezoo's drift measurement, against a bare loop running both models on
            preloaded inputs.
and prints seconds and the ratio posezoo / bare (1.00 = no overhead). Needs the outputs of
`posezoo calibrate` and `posezoo fetch` (run `dvc repro` first).

    python benchmarks/pipeline_overhead.py [--models hand_landmark_lite ...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.calibration.reader import iter_inputs  # noqa: E402
from pipeline.convert.onnx_to_savedmodel import ONNX2TF_SAMPLE, onnx2tf_sample, onnx_to_savedmodel  # noqa: E402
from pipeline.convert.runners import runner_for  # noqa: E402
from pipeline.convert.tflite_to_onnx import tflite_to_onnx  # noqa: E402
from pipeline.convert.verify import compare_models, verify_settings  # noqa: E402
from pipeline.evaluate.drift import measure_drift  # noqa: E402
from pipeline.quantize.config import QuantConfig  # noqa: E402
from pipeline.quantize.onnx import quantize_onnx  # noqa: E402
from pipeline.quantize.tflite import quantize_tflite  # noqa: E402
from pipeline.registry import load_model  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        fn()
    return time.perf_counter() - start


def bare_convert(src: Path, work: Path, manifest: Path) -> None:
    import onnx2tf
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter

    name = Interpreter(model_path=str(src)).get_input_details()[0]["name"]
    tf2onnx.convert.from_tflite(str(src), opset=17, inputs_as_nchw=[name], output_path=str(work / "bare.onnx"))
    np.save(work / ONNX2TF_SAMPLE, onnx2tf_sample(manifest))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        onnx2tf.convert(input_onnx_file_path=str(work / "bare.onnx"), output_folder_path=str(work / "bare_sm"), output_signaturedefs=True, non_verbose=True)
    finally:
        os.chdir(cwd)


def bare_tflite(saved_model: Path, data: list[np.ndarray], dest: Path) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    dest.write_bytes(converter.convert())


def bare_onnx(float_onnx: Path, data: list[np.ndarray], dest: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(str(float_onnx)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(data)

        def get_next(self):  # type: ignore[no-untyped-def]
            x = next(self.it, None)
            return None if x is None else {name: x.transpose(0, 3, 1, 2)}

    pre = dest.with_suffix(".pre.onnx")
    quant_pre_process(str(float_onnx), str(pre))
    quantize_static(str(pre), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)


def bare_eval(src: Path, int8: Path, data: list[np.ndarray]) -> None:
    ref = runner_for(src, source_order=True)
    got = runner_for(int8)
    for x in data:
        ref(x)
        got(x)


def bench_model(name: str, calib: Path) -> list[tuple[str, float, float]]:
    spec = load_model(name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    src = ROOT / "build" / "source" / name / "model.tflite"
    manifest, holdout = calib / "manifest.json", calib / "holdout.json"
    calib_data = [x for _, x in iter_inputs(manifest, spec.input)]
    hold_data = [x for _, x in iter_inputs(holdout, spec.input)]
    opset = params["convert"]["opset"]
    atol, rtol, samples, overrides = verify_settings(params, name, ROOT / "params.yaml")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def posezoo_convert() -> None:
            tflite_to_onnx(src, work / "model.onnx", opset)
            compare_models(src, work / "model.onnx", manifest, spec.input, atol, rtol, samples, overrides)
            onnx_to_savedmodel(work / "model.onnx", work / "saved_model", manifest)
            compare_models(src, work / "saved_model", manifest, spec.input, atol, rtol, samples, overrides)

        rows.append(("convert", timed(posezoo_convert), timed(lambda: bare_convert(src, work, manifest))))
        rows.append(("quantize tflite pc", timed(lambda: quantize_tflite(work / "saved_model", work / "q.tflite", manifest, spec.input, QuantConfig(per_channel=True))),
                     timed(lambda: bare_tflite(work / "saved_model", calib_data, work / "bare.tflite"))))
        rows.append(("quantize onnx pc", timed(lambda: quantize_onnx(work / "model.onnx", work / "q.onnx", manifest, spec.input, QuantConfig(per_channel=True))),
                     timed(lambda: bare_onnx(work / "model.onnx", calib_data, work / "bare_q.onnx"))))
        rows.append(("evaluate tflite", timed(lambda: measure_drift(spec, src, work / "q.tflite", holdout)), timed(lambda: bare_eval(src, work / "q.tflite", hold_data))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_models = list(yaml.safe_load((ROOT / "params.yaml").read_text())["models"])
    parser.add_argument("--models", nargs="+", default=default_models)
    parser.add_argument("--calibration", type=Path, default=ROOT / "calibration" / "default")
    args = parser.parse_args()
    # Warm-up (untimed): the first TensorFlow conversion in a process pays for imports and graph
    # tracing setup, which would otherwise be charged to whichever side runs first.
    with tempfile.TemporaryDirectory() as tmp:
        warm = load_model(args.models[0])
        with contextlib.redirect_stdout(io.StringIO()):
            bare_convert(ROOT / "build" / "source" / warm.name / "model.tflite", Path(tmp), args.calibration / "manifest.json")
    print(f"{'model':<22} {'stage':<20} {'posezoo s':>10} {'bare s':>8} {'ratio':>6}")
    for name in args.models:
        for stage, ours, bare in bench_model(name, args.calibration):
            print(f"{name:<22} {stage:<20} {ours:>10.2f} {bare:>8.2f} {ours / bare:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
