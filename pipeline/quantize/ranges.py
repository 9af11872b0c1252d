"""Activation ranges computed once on the float ONNX and imposed on both int8 exports.

The clipping range of every activation tensor decides most of the per-tensor int8 error. This
module computes a :class:`RangeTable` — ``{ONNX tensor name: (lo, hi)}`` — from the calibration
manifest with onnxruntime's own calibrators on the pre-processed float ONNX (the graph the ONNX
exporter quantizes, so the table's names are exactly the tensors onnxruntime quantizes):

- ``minmax``: :class:`~onnxruntime.quantization.calibrate.MinMaxCalibrater` (observed extremes).
- ``percentile``: ``PercentileCalibrater`` as ``quantize_static`` configures it (histogram of |x|
  with 2048 bins, symmetric threshold at the percentile, clipped to the observed min/max).
- ``entropy``: ``EntropyCalibrater`` (TensorRT's KL-divergence threshold search). onnxruntime's
  default of 128 histogram bins with 128 quantized bins leaves it a single candidate (the full
  range: entropy would equal MinMax), so the histogram has :data:`HIST_BINS` = 2048 bins, as in
  TensorRT, and 128 quantized bins.
- ``mse``: onnxruntime has no MSE calibrator, so the histograms are onnxruntime's
  (``EntropyCalibrater``'s signed-value collection, 2048 bins) and :func:`mse_range` picks, by
  hand, the ``(lo, hi)`` minimising the expected squared error of clipping plus rounding for the
  activation width (``activation_bits``).

Samples are fed in chunks of :data:`CHUNK` (onnxruntime's histogram calibrators keep every
intermediate output of one ``collect_data`` call in memory: 100 samples of BlazePose are ~10 GB);
histograms are merged across chunks by onnxruntime's own ``HistogramCollector``. Everything is
deterministic: same model, manifest and settings give the same table, on any machine (the
calibrators' sessions run on a fixed thread count, not one thread per core).

The TFLite exporter maps TFLite tensors onto these ONNX names (:mod:`pipeline.quantize.tflite_match`) and,
for TFLite tensors with no ONNX counterpart, computes ranges on the TFLite float graph with
:class:`RangeCollector` — the same onnxruntime collector and the same range function.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from pipeline.calibration.reader import iter_inputs
from pipeline.convert.runners import onnx_input_layout, ort_session
from pipeline.errors import PosezooError
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.preprocess import op_types_to_quantize, preprocess_onnx
from pipeline.registry import InputSpec
from pipeline.threads import NUMERIC_THREADS

log = logging.getLogger(__name__)

#: Calibration samples per collection pass (bounds memory; see the module docstring).
CHUNK = 10
#: Histogram bins of the percentile, entropy and MSE methods.
HIST_BINS = 2048
#: Quantized bins of the entropy (KL) search: 128, TensorRT's value for 8-bit.
ENTROPY_QUANTIZED_BINS = 128


@dataclass(frozen=True)
class RangeTable:
    """Activation ranges of one float ONNX under one calibration method."""

    calibration: str
    percentile: float
    activation_bits: int
    #: ONNX tensor name -> (lo, hi) clipping range (float32 values), in graph order.
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: ONNX tensor name -> observed (min, max) over the manifest.
    observed: dict[str, tuple[float, float]] = field(default_factory=dict)

    def fits(self, config: QuantConfig) -> bool:
        """Whether this table was computed for ``config``'s calibration settings."""
        return (
            self.calibration == config.calibration
            and (config.calibration != "percentile" or self.percentile == config.percentile)
            and (config.calibration != "mse" or self.activation_bits == config.activation_bits)
        )

    def to_json(self) -> str:
        """Deterministic JSON (floats written exactly)."""
        return json.dumps(
            {
                "calibration": self.calibration,
                "percentile": self.percentile,
                "activation_bits": self.activation_bits,
                "ranges": {k: list(v) for k, v in self.ranges.items()},
                "observed": {k: list(v) for k, v in self.observed.items()},
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> "RangeTable":
        data = json.loads(text)
        return cls(
            data["calibration"],
            float(data["percentile"]),
            int(data["activation_bits"]),
            {k: (float(v[0]), float(v[1])) for k, v in data["ranges"].items()},
            {k: (float(v[0]), float(v[1])) for k, v in data["observed"].items()},
        )


def write_ranges(table: RangeTable, path: Path) -> None:
    """Save a table as JSON (atomic), for stages that share one table between variants."""
    from pipeline.atomic import write_bytes

    write_bytes(Path(path), table.to_json().encode())


def read_ranges(path: Path) -> RangeTable:
    """A table saved by :func:`write_ranges`; a missing or malformed file is a one-line error."""
    try:
        return RangeTable.from_json(Path(path).read_text())
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise PosezooError(f"{path}: not a range table ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); recompute it with compute_ranges") from err


def _f32(x: Any) -> float:
    return float(np.float32(np.asarray(x, dtype=np.float32).reshape(-1)[0]))


class _ListReader:
    """A CalibrationDataReader over a list of feeds (one chunk)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def chunks(manifest: Path, spec: InputSpec, layout: str, size: int = CHUNK) -> Iterator[list[np.ndarray]]:
    """Manifest inputs in lists of ``size`` (the last may be shorter), in manifest order."""
    inputs = (x for _, x in iter_inputs(manifest, spec, layout))
    while True:
        chunk = list(itertools.islice(inputs, size))
        if not chunk:
            return
        yield chunk


def _collector_settings(calibration: str, percentile: float) -> dict[str, Any]:
    """``HistogramCollector`` arguments of a histogram method (shared by ONNX and TFLite sides)."""
    if calibration == "percentile":
        # quantize_static's percentile calibrator: symmetric (|x|) histogram, create_calibrator's default.
        return {"method": "percentile", "symmetric": True, "num_bins": HIST_BINS, "num_quantized_bins": HIST_BINS, "percentile": percentile, "scenario": "same"}
    if calibration in ("entropy", "mse"):
        return {"method": "entropy", "symmetric": False, "num_bins": HIST_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS, "percentile": percentile, "scenario": "same"}
    raise ValueError(calibration)


@contextlib.contextmanager
def pinned_calibrators() -> Iterator[None]:
    """Inside, onnxruntime's calibrators (``create_calibrator``, ``quantize_static``'s) run on
    :data:`~pipeline.threads.NUMERIC_THREADS` threads instead of one per core; otherwise as onnxruntime opens them
    (no graph optimization, CPU)."""
    from onnxruntime.quantization.calibrate import CalibraterBase

    def create_inference_session(self: Any) -> None:
        self.infer_session = ort_session(str(self.augmented_model_path), optimization="none", threads=NUMERIC_THREADS)

    original = CalibraterBase.create_inference_session
    CalibraterBase.create_inference_session = create_inference_session
    try:
        yield
    finally:
        CalibraterBase.create_inference_session = original


def _create_calibrator(pre_onnx: Path, calibration: str, percentile: float, augmented: Path) -> Any:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    if calibration == "minmax":
        method, extra = CalibrationMethod.MinMax, {}
    else:
        settings = _collector_settings(calibration, percentile)
        if calibration == "percentile":
            method = CalibrationMethod.Percentile
            extra = {k: settings[k] for k in ("num_bins", "percentile", "symmetric")}
        else:
            method = CalibrationMethod.Entropy
            extra = {k: settings[k] for k in ("num_bins", "num_quantized_bins", "symmetric")}
    with pinned_calibrators():
        return create_calibrator(pre_onnx, op_types_to_quantize(), augmented_model_path=str(augmented), calibrate_method=method, extra_options=extra)


def mse_range(hist: np.ndarray, edges: np.ndarray, lo: float, hi: float, bits: int) -> tuple[float, float]:
    """The clipping range in ``[lo, hi]`` (the observed extremes) with the least expected squared error.

    Values are taken at their bin centres. For a candidate ``(a, b)`` the error is the clipping
    error ``sum n (x - clip(x))^2`` of values outside plus the rounding error ``n * step^2 / 12``
    of values inside, where ``step = (b - a) / (2^bits - 1)`` for asymmetric 8-bit activations and
    ``2 max(|a|, |b|) / (2^bits - 2)`` for symmetric 16-bit ones (TFLite 16x8, onnxruntime
    int16 with ``ActivationSymmetric``). Candidates are the histogram's bin edges between the
    extremes and zero (both quantizers make zero exactly representable); the search is exhaustive
    over (a, b) pairs with prefix sums, and ties go to the first (narrowest) pair.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    counts = np.asarray(hist, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    total = counts.sum()
    if total == 0 or hi - lo <= 0:
        return _f32(lo), _f32(hi)
    centers = (edges[:-1] + edges[1:]) / 2
    his = np.unique(np.concatenate([edges[(edges > 0) & (edges < hi)], [hi]]))
    los = np.unique(np.concatenate([edges[(edges < 0) & (edges > lo)], [lo]]))
    n0, n1, n2 = (np.concatenate([[0.0], np.cumsum(counts * centers**k)]) for k in range(3))

    def tail_error(bounds: np.ndarray, above: bool) -> tuple[np.ndarray, np.ndarray]:
        """(sum of n (x - bound)^2, count) over bins whose centre lies beyond each bound."""
        if above:
            i = np.searchsorted(centers, bounds, side="right")
            s0, s1, s2 = n0[-1] - n0[i], n1[-1] - n1[i], n2[-1] - n2[i]
        else:
            i = np.searchsorted(centers, bounds, side="left")
            s0, s1, s2 = n0[i], n1[i], n2[i]
        return s2 - 2 * bounds * s1 + bounds**2 * s0, s0

    err_hi, out_hi = tail_error(his, above=True)
    err_lo, out_lo = tail_error(los, above=False)
    a, b = los[:, None], his[None, :]
    if bits == 8:
        step = (b - a) / (2**bits - 1)
    else:
        step = 2 * np.maximum(-a, b) / (2**bits - 2)
    inside = total - out_lo[:, None] - out_hi[None, :]
    error = err_lo[:, None] + err_hi[None, :] + np.maximum(inside, 0.0) * step**2 / 12
    i, j = np.unravel_index(int(np.argmin(error)), error.shape)
    return _f32(los[i]), _f32(his[j])


class RangeCollector:
    """Range statistics over named arrays, computed as :func:`compute_ranges` does for ONNX tensors.

    Wraps onnxruntime's ``HistogramCollector`` with the settings of the chosen method (or a plain
    min/max for ``minmax``); feed one :meth:`collect` per chunk of samples, then :meth:`ranges`.
    """

    def __init__(self, calibration: str, percentile: float, activation_bits: int) -> None:
        from onnxruntime.quantization.calibrate import HistogramCollector

        self.calibration, self.bits = calibration, activation_bits
        self._minmax: dict[str, tuple[float, float]] = {}
        self.collector = None if calibration == "minmax" else HistogramCollector(**_collector_settings(calibration, percentile))

    def collect(self, chunk: Mapping[str, list[np.ndarray]]) -> None:
        if self.collector is None:
            for name, arrays in chunk.items():
                lo = min(float(np.min(a)) for a in arrays)
                hi = max(float(np.max(a)) for a in arrays)
                old = self._minmax.get(name, (lo, hi))
                self._minmax[name] = (min(old[0], lo), max(old[1], hi))
            return
        with contextlib.redirect_stdout(io.StringIO()):
            self.collector.collect({k: [np.asarray(a, dtype=np.float32) for a in v] for k, v in chunk.items()})

    def observed(self) -> dict[str, tuple[float, float]]:
        if self.collector is None:
            return {k: (_f32(v[0]), _f32(v[1])) for k, v in self._minmax.items()}
        return {k: (_f32(h[2]), _f32(h[3])) for k, h in self.collector.histogram_dict.items()}

    def ranges(self) -> dict[str, tuple[float, float]]:
        if self.collector is None:
            return self.observed()
        return _finish(self.collector, self.calibration, self.bits)


def rebin(histogram: tuple[Any, ...], max_bins: int = HIST_BINS) -> tuple[Any, ...]:
    """A signed-value histogram ``(hist, edges, min, max, threshold)`` with at most ``max_bins`` bins.

    onnxruntime's collector starts a tensor's histogram at 2048 bins over ±max|x| of the first
    chunk and, when a later chunk reaches further, extends it with bins of the same width, so a
    histogram can end with many times 2048 bins; the KL search is quadratic in bins (hours on
    BlazePose) and the MSE search builds a bins² grid. Adjacent bins are summed by the smallest
    factor that fits, after padding both ends with empty bins so that the edge at zero stays an
    edge (both searches are symmetric around it). Histograms within the limit are returned as is.
    """
    hist, edges = np.asarray(histogram[0]), np.asarray(histogram[1])
    if len(hist) <= max_bins:
        return histogram
    half = len(hist) // 2
    factor = -(-len(hist) // max_bins)
    pad = (-half) % factor
    width = edges[1] - edges[0]
    hist = np.concatenate([np.zeros(pad, hist.dtype), hist, np.zeros(pad, hist.dtype)])
    low = edges[0] - width * np.arange(pad, 0, -1)
    high = edges[-1] + width * np.arange(1, pad + 1)
    edges = np.concatenate([low, edges, high]).astype(np.asarray(histogram[1]).dtype)
    return (hist.reshape(-1, factor).sum(axis=1), edges[::factor], *histogram[2:])


def _finish(collector: Any, calibration: str, bits: int) -> dict[str, tuple[float, float]]:
    """Ranges from a filled onnxruntime ``HistogramCollector``."""
    if not collector.histogram_dict:
        return {}
    if calibration in ("entropy", "mse"):
        collector.histogram_dict = {name: rebin(h) for name, h in collector.histogram_dict.items()}
    if calibration == "mse":
        return {name: mse_range(h[0], h[1], h[2], h[3], bits) for name, h in collector.histogram_dict.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        result = collector.compute_collection_result()  # percentile / entropy, onnxruntime's code
    return {name: (_f32(v[0]), _f32(v[1])) for name, v in result.items()}


def ranges_of_preprocessed(pre_onnx: Path, manifest: Path, spec: InputSpec, config: QuantConfig, layout: str) -> RangeTable:
    """The :class:`RangeTable` of an already pre-processed float ONNX (see :func:`compute_ranges`)."""
    import onnx

    graph = onnx.load(str(pre_onnx), load_external_data=False).graph
    input_name = graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="posezoo-ranges-") as tmp:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                calibrator = _create_calibrator(pre_onnx, config.calibration, config.percentile, Path(tmp) / "augmented.onnx")
                for chunk in chunks(manifest, spec, layout):
                    calibrator.collect_data(_ListReader([{input_name: x} for x in chunk]))
        except PosezooError:
            raise
        except Exception as err:  # onnxruntime raises plain exceptions
            raise PosezooError(f"{pre_onnx}: onnxruntime {config.calibration} calibration failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check the float model") from err
        if config.calibration == "minmax":
            data = calibrator.compute_data()
            found = {name: (_f32(data[name].range_value[0]), _f32(data[name].range_value[1])) for name in data}
            observed = dict(found)
        else:
            found = _finish(calibrator.collector, config.calibration, config.activation_bits)
            observed = {k: (_f32(h[2]), _f32(h[3])) for k, h in calibrator.collector.histogram_dict.items()}
        del calibrator
    order = [t for node in graph.node for t in itertools.chain(node.input, node.output)]
    order = list(dict.fromkeys([i.name for i in graph.input] + order))
    ranges = {name: found[name] for name in order if name in found}
    ranges.update({name: found[name] for name in sorted(found) if name not in ranges})
    return RangeTable(config.calibration, config.percentile, config.activation_bits, ranges, {k: observed[k] for k in ranges if k in observed})


def compute_ranges(float_onnx: Path, manifest: Path, spec: InputSpec, config: QuantConfig) -> RangeTable:
    """Activation ranges of ``float_onnx`` over the manifest, with ``config``'s calibration method.

    Keys are tensor names of the pre-processed ONNX (:func:`preprocess_onnx`) — the graph
    onnxruntime quantizes. Pre-processing keeps node names but may rename a tensor when it removes
    nodes around it (a Transpose pair around a Mul makes the Mul's output ``Mul_3``). Both
    exporters accept the result as ``ranges=``.
    """
    float_onnx = Path(float_onnx)
    with tempfile.TemporaryDirectory(prefix="posezoo-pre-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        preprocess_onnx(float_onnx, pre)
        table = ranges_of_preprocessed(pre, manifest, spec, config, onnx_input_layout(float_onnx))
    log.info("%s: %s ranges of %d activation tensors", float_onnx, config.calibration, len(table.ranges))
    return table
