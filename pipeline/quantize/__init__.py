"""Full-integer int8 export: TFLite (TFLiteConverter) and ONNX QDQ (onnxruntime.quantization)."""

GRANULARITIES = {"per_channel": "pc", "per_tensor": "pt"}
FORMATS = ("tflite", "onnx")


def variant_name(model: str, resolution: int, granularity: str) -> str:
    """``<model>_<res>_int8_<pc|pt>``: the file stem of an int8 variant."""
    return f"{model}_{resolution}_int8_{GRANULARITIES[granularity]}"
