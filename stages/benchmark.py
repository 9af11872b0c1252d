"""Time a model variant on the host CPU: median and p90 latency per runtime (not on-target).

Each file is run at batch 1 with `benchmark.threads` threads on every runtime that applies to its
type — LiteRT for .tflite, onnxruntime for .onnx (a QDQ file also in its exact uint8-activation
U8S8 form), OpenVINO CPU for all of them and for OpenVINO IR .xml — `benchmark.warmup` untimed
runs then `benchmark.runs` timed ones (params.yaml). With --out it writes the metrics file DVC
tracks; the model cards quote it as host figures.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json
from pipeline.benchmark import benchmark_model
from pipeline.errors import PosezooError
from pipeline.params import get, load_params, model_for
from pipeline.source_model import FLOAT_FORMATS, model_file, single_model

HELP = "host CPU latency (median, p90) of model files on LiteRT, onnxruntime and OpenVINO"
log = logging.getLogger("posezoo.benchmark")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="MODEL",
                        help=".tflite / .onnx / OpenVINO .xml file, or a quantize output directory holding one model")
    parser.add_argument("--model", required=True, help="registry name of the model (recorded in the metrics)")
    parser.add_argument("--key", required=True, help="stage key recorded in the metrics, e.g. hand_landmark_full-per_channel-tflite")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (benchmark.runs, .warmup, .threads)")
    parser.add_argument("--out", type=Path, help="write the JSON metrics file here (for DVC)")
    parser.add_argument(
        "--float-source", type=Path, metavar="DIR",
        help="`posezoo fetch` output: also time the source model when it is a float model (a published int8 source is not)",
    )


def _int_param(params: dict[str, Any], name: str, path: Path, minimum: int) -> int:
    value = get(params, name, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PosezooError(f"{path}: {name} is {value!r}; it must be an integer >= {minimum}")
    return value


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    runs = _int_param(params, "benchmark.runs", args.params, 1)
    warmup = _int_param(params, "benchmark.warmup", args.params, 0)
    threads = _int_param(params, "benchmark.threads", args.params, 1)
    spec, _ = model_for(params, args.model, args.params)  # an unknown name fails here, before any timing
    files = [single_model(p) for p in args.files]
    if args.float_source is not None and spec.source["format"] in FLOAT_FORMATS:
        files.append(model_file(args.float_source, spec.source["format"]))
    doc = benchmark_model(args.model, args.key, files, runs, warmup, threads)
    if args.out:
        write_json(args.out, doc)
    print(f"{args.key}: host CPU latency ({doc['host']['cpu']}, {threads} thread(s), batch 1, median of {runs} runs), not on-target")
    for runtime_id, entry in doc["runtimes"].items():
        mark = "*" if runtime_id == doc["fastest"] else " "
        if "error" in entry:
            print(f" {mark} {runtime_id:18s} {entry['file']}: not run ({entry['error']})")
        else:
            print(f" {mark} {runtime_id:18s} {entry['file']}: median {entry['median_ms']:.3f} ms, p90 {entry['p90_ms']:.3f} ms, min {entry['min_ms']:.3f} ms")
