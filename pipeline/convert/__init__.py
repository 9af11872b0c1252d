"""Format conversion (TFLite → ONNX → SavedModel) and numerical verification of every step."""
