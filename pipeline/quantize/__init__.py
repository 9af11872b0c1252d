"""Integer export: TFLite (TFLiteConverter), ONNX QDQ (onnxruntime.quantization), OpenVINO IR (NNCF).

:class:`~pipeline.quantize.config.QuantConfig` says how (granularity, calibration method,
8- or 16-bit activations, layers kept in float); :mod:`pipeline.quantize.ranges` computes shared
activation ranges; :mod:`pipeline.quantize.export` hands a prepared scheme to the exporter of a
format (:mod:`~pipeline.quantize.tflite`, :mod:`~pipeline.quantize.onnx`,
:mod:`~pipeline.quantize.openvino`), which writes the file; :mod:`pipeline.quantize.sidecar`
records how. The file formats themselves are :mod:`pipeline.formats`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pipeline.params import get
from pipeline.quantize.config import CALIBRATIONS, QuantConfig, quantizable_layers

GRANULARITIES = {"per_channel": "pc", "per_tensor": "pt"}

__all__ = ["CALIBRATIONS", "GRANULARITIES", "QuantConfig", "expected_variants", "quantizable_layers", "variant_key", "variant_name"]


def expected_variants(params: Mapping[str, Any], params_path: Path) -> list[tuple[str, str]]:
    """(scheme, format) of every variant a model has under the current params, schemes first.

    ``quantize.schemes`` × ``quantize.formats``: exactly the variants dvc.yaml builds, so the
    recommendation and the cards cover these and never a leftover of a removed scheme or format.
    """
    schemes = [str(s) for s in get(dict(params), "quantize.schemes", params_path)]
    formats = [str(f) for f in get(dict(params), "quantize.formats", params_path)]
    return [(s, f) for s in schemes for f in formats]


def variant_key(model: str, scheme: str, fmt: str) -> str:
    """``<model>-<scheme>-<format>``: the stage key of a variant, naming its metrics files and build folder."""
    return f"{model}-{scheme}-{fmt}"


def variant_name(model: str, resolution: int, granularity: str, config: QuantConfig | None = None) -> str:
    """``<model>_<res>_int8_<pc|pt>``: the file stem of an integer variant.

    A non-default ``config`` changes it: 16-bit activations read ``a16w8`` instead of ``int8``
    and :attr:`QuantConfig.tag` (calibration, float layers) is appended, e.g.
    ``hand_landmark_full_224_a16w8_pt_mse_fb2``.
    """
    width = "a16w8" if config is not None and config.activation_bits == 16 else "int8"
    stem = f"{model}_{resolution}_{width}_{GRANULARITIES[granularity]}"
    tag = config.tag if config is not None else ""
    return f"{stem}_{tag}" if tag else stem
