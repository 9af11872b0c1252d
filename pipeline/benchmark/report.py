"""The benchmark metrics document (``metrics/benchmark/<key>.json``) of one model variant.

The model cards read this file; its keys are the agreed schema: ``model``, ``key``, ``files``,
``host`` (CPU, cores, threads, batch, runs, warm-up and the note that these are host figures),
``runtimes`` (``{runtime id: entry}``) and ``fastest``. The figures are host CPU latencies: they
rank runtimes and variants on the development machine, they are not on-target measurements.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from pipeline.benchmark.latency import benchmark_file, fastest

NOTE = "host CPU latency, not on-target"


def cpu_name() -> str:
    """The CPU model name of /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def host_info(threads: int, runs: int, warmup: int) -> dict[str, Any]:
    """The ``host`` block: where and how the figures were measured."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count() or 0,
        "threads": threads,
        "batch": 1,
        "runs": runs,
        "warmup": warmup,
        "note": NOTE,
    }


def benchmark_model(model: str, key: str, files: list[Path], runs: int, warmup: int, threads: int) -> dict[str, Any]:
    """Time every file of one variant on its runtimes and assemble the metrics document.

    With several files (the float model: its ONNX and its source TFLite) a runtime id that
    applies to more than one of them (``openvino``) is measured on the first file given, so the
    entry is the same on every run; its ``file`` says which one.
    """
    entries: dict[str, dict[str, Any]] = {}
    for path in files:
        entries.update(benchmark_file(path, runs, warmup, threads, skip=frozenset(entries)))
    return {
        "model": model,
        "key": key,
        "files": [Path(p).name for p in files],
        "host": host_info(threads, runs, warmup),
        "runtimes": entries,
        "fastest": fastest(entries),
    }
