"""Host latency of one model file on every runtime that applies to its type.

| file | runtime ids |
|---|---|
| ``.tflite`` | ``tflite`` (LiteRT interpreter), ``openvino`` |
| float ``.onnx`` | ``onnxruntime``, ``openvino`` |
| QDQ ``.onnx`` | ``onnxruntime_qdq`` (the file as written), ``onnxruntime_u8s8`` (its exact uint8-activation form, :mod:`pipeline.benchmark.u8s8`), ``openvino`` |
| ``.xml`` (OpenVINO IR) | ``openvino_ir`` |

The first runtime of each row is the file's own: if it cannot load the file, the file is bad and
that is a :class:`PosezooError`. Any other runtime that fails is recorded with a one-line
``error`` instead (e.g. an OpenVINO version that cannot compile an int8 TFLite), so one
runtime's gap does not hide the others' figures.

Timing: ``warmup`` untimed runs (first-run allocations, lazy kernel selection, caches), then
``runs`` runs each timed alone with :func:`time.perf_counter_ns`. The onnxruntime and OpenVINO
steps include copying the outputs into numpy arrays, as an application would; LiteRT's
``invoke`` leaves them in the interpreter (reading them is a pointer access).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.benchmark import runtimes
from pipeline.errors import PosezooError

log = logging.getLogger(__name__)

#: numpy percentile method of p90: "linear" (numpy's default, type 7 of Hyndman & Fan):
#: interpolates between the two nearest order statistics.
P90_METHOD = "linear"


@dataclass(frozen=True)
class Timing:
    """Latency statistics of ``runs`` timed runs, in milliseconds."""

    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int

    @classmethod
    def of(cls, durations_ns: list[int]) -> "Timing":
        """Statistics of per-run durations in nanoseconds."""
        d = np.asarray(durations_ns, dtype=np.float64) / 1e6
        return cls(
            median_ms=round(float(np.median(d)), 4),
            p90_ms=round(float(np.percentile(d, 90, method=P90_METHOD)), 4),
            min_ms=round(float(d.min()), 4),
            runs=len(d),
        )


def time_runs(step: Callable[[], Any], runs: int, warmup: int, clock: Callable[[], int] = time.perf_counter_ns) -> Timing:
    """Call ``step`` ``warmup`` times untimed, then ``runs`` times, each timed with ``clock``."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        step()
    durations = []
    for _ in range(runs):
        start = clock()
        step()
        durations.append(clock() - start)
    return Timing.of(durations)


def one_line(err: BaseException) -> str:
    """A one-line reason from a runtime exception.

    OpenVINO's messages start with "Exception from <source file>:<line>:" lines that say nothing
    about the cause; they are dropped.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.strip().startswith("Exception from ")]
    text = " ".join(lines) or type(err).__name__
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


def is_qdq(model: Any) -> bool:
    """Whether an ONNX model holds QuantizeLinear / DequantizeLinear nodes."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


#: A plan entry: (runtime id, builder of the prepared step).
Plan = list[tuple[str, Callable[[], runtimes.Prepared]]]


def plan(path: Path, threads: int) -> Plan:
    """The runtimes that apply to ``path``, its own runtime first."""
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        from pipeline.convert.tflite_to_onnx import check_tflite

        check_tflite(path)  # a truncated flatbuffer can crash the interpreter instead of raising
        return [("tflite", lambda: runtimes.prepare_litert(path, threads)), ("openvino", lambda: runtimes.prepare_openvino(path, threads))]
    if suffix == ".xml":
        return [("openvino_ir", lambda: runtimes.prepare_openvino(path, threads))]
    if suffix == ".onnx":
        import onnx

        from pipeline.benchmark.u8s8 import int8_activation_quantizers, to_u8s8

        try:
            model = onnx.load(str(path))
        except Exception as err:  # onnx raises DecodeError / OSError subclasses for bad files
            raise PosezooError(f"{path}: not a readable ONNX model ({one_line(err)}); re-export it (e.g. `posezoo quantize`)") from err
        if not is_qdq(model):
            return [("onnxruntime", lambda: runtimes.prepare_onnxruntime(path, threads, path)), ("openvino", lambda: runtimes.prepare_openvino(path, threads))]
        steps: Plan = [("onnxruntime_qdq", lambda: runtimes.prepare_onnxruntime(path, threads, path))]
        if int8_activation_quantizers(model):
            steps.append(("onnxruntime_u8s8", lambda: runtimes.prepare_onnxruntime(to_u8s8(model).SerializeToString(), threads, path)))
        else:
            log.info("%s: no int8 activation QuantizeLinear to rewrite (e.g. 16-bit activations): no onnxruntime_u8s8 figure", path.name)
        steps.append(("openvino", lambda: runtimes.prepare_openvino(path, threads)))
        return steps
    raise PosezooError(f"{path}: cannot benchmark a '{path.suffix}' file; pass a .tflite, .onnx or OpenVINO .xml model")


def benchmark_file(path: Path, runs: int, warmup: int, threads: int, skip: frozenset[str] = frozenset(), clock: Callable[[], int] = time.perf_counter_ns) -> dict[str, dict[str, Any]]:
    """``{runtime id: entry}`` for ``path``: timing figures, or ``error`` for a failed runtime.

    Runtime ids in ``skip`` (already measured on another file of the same model) are left out.
    """
    path = Path(path)
    entries: dict[str, dict[str, Any]] = {}
    for index, (runtime_id, prepare) in enumerate(plan(path, threads)):
        if runtime_id in skip:
            log.info("%s: %s already measured on an earlier file; skipped", path.name, runtime_id)
            continue
        try:
            prepared = prepare()
            timing = time_runs(prepared.step, runs, warmup, clock)
        except Exception as err:  # runtimes raise their own exception types (RuntimeError, ValueError, ...)
            reason = str(err) if isinstance(err, PosezooError) else one_line(err)
            if index == 0:
                if isinstance(err, PosezooError):
                    raise
                raise PosezooError(f"{path}: {runtime_id} cannot run it ({reason}); check that the file is a complete, valid model") from err
            log.warning("%s on %s: %s", path.name, runtime_id, reason)
            entries[runtime_id] = {"file": path.name, "error": reason}
            continue
        entries[runtime_id] = {
            "file": path.name,
            "median_ms": timing.median_ms,
            "p90_ms": timing.p90_ms,
            "min_ms": timing.min_ms,
            "runs": timing.runs,
            "versions": prepared.versions,
        }
        log.info("%s on %s: median %.3f ms, p90 %.3f ms (%d runs, %d threads)", path.name, runtime_id, timing.median_ms, timing.p90_ms, timing.runs, threads)
    return entries


def fastest(entries: dict[str, dict[str, Any]]) -> str | None:
    """The measured runtime with the lowest median (first listed on a tie); None if none ran."""
    measured = [(entry["median_ms"], i, rid) for i, (rid, entry) in enumerate(entries.items()) if "median_ms" in entry]
    return min(measured)[2] if measured else None
