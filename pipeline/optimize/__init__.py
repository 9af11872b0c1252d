"""Float-model transforms that make int8 quantization lose less, applied before any export.

Both exporters (TFLite and ONNX QDQ) start from the same float ONNX, so a transform of that file
helps both: :func:`equalize_onnx` (cross-layer equalization and bias absorption, Nagel et al.
2019 §4.1; function-preserving and verified) and :func:`bias_correct_onnx` (empirical bias
correction, §4.2; deliberately changes the float function to cancel the int8 weights' mean error).
"""

from pipeline.optimize.bias_correction import bias_correct_onnx
from pipeline.optimize.equalize import equalize_onnx

__all__ = ["bias_correct_onnx", "equalize_onnx"]
