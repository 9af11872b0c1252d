"""Host CPU latency of the pipeline's models on LiteRT, onnxruntime and OpenVINO.

``posezoo benchmark`` times each model file at batch 1 with a fixed thread count on every
runtime that runs its type (:mod:`.latency`, :mod:`.runtimes`), including the exact uint8-activation
form of QDQ ONNX files that onnxruntime runs fastest on x86 (:mod:`.u8s8`), and writes
``metrics/benchmark/<key>.json`` (:mod:`.report`). These are host figures for ranking runtimes and
variants, not latencies on the microcontroller / NPU targets.
"""

from pipeline.benchmark.latency import Timing, benchmark_file, time_runs
from pipeline.benchmark.report import benchmark_model
from pipeline.benchmark.u8s8 import to_u8s8

__all__ = ["Timing", "benchmark_file", "benchmark_model", "time_runs", "to_u8s8"]
