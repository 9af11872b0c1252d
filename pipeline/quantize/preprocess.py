"""onnxruntime's quantization front end, shared by everything that names ONNX tensors or layers.

The ONNX exporter quantizes the *pre-processed* float ONNX, so the activation ranges
(:mod:`pipeline.quantize.ranges`), the layers a fallback may keep in float
(:func:`~pipeline.quantize.config.quantizable_layers`) and the TFLite exporter's tensor matching
all work on that graph, with the op types onnxruntime quantizes. Kept apart from both so that the
config (which lists layers) and the range computation (which takes a config) do not import each other.
"""

from __future__ import annotations

from pathlib import Path


def preprocess_onnx(float_onnx: Path, dest: Path) -> None:
    """onnxruntime's quantization pre-processing (symbolic shape inference + basic optimisation)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(float_onnx), str(dest), skip_symbolic_shape=False)


def op_types_to_quantize() -> list[str]:
    """The op types ``quantize_static`` quantizes (and calibrates) by default, sorted."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
