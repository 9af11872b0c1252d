"""Integer export: TFLite (TFLiteConverter) and ONNX QDQ (onnxruntime.quantization).

:class:`~pipeline.quantize.config.QuantConfig` says how (granularity, calibration method,
8- or 16-bit activations, layers kept in float); :mod:`pipeline.quantize.ranges` computes shared
activation ranges; :func:`~pipeline.quantize.tflite.quantize_tflite` and
:func:`~pipeline.quantize.onnx.quantize_onnx` write the files.
"""

from __future__ import annotations

from pipeline.quantize.config import CALIBRATIONS, QuantConfig, quantizable_layers

GRANULARITIES = {"per_channel": "pc", "per_tensor": "pt"}
#: int8 output formats and the model file suffix of each (an OpenVINO IR has its .bin beside the .xml).
FORMATS = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}

__all__ = ["CALIBRATIONS", "FORMATS", "GRANULARITIES", "QuantConfig", "quantizable_layers", "variant_name"]


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
