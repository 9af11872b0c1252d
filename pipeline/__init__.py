"""posezoo: reproducible int8 quantization and conversion of pose / landmark models."""

__version__ = "0.1.0"
