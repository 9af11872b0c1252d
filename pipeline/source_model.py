"""Where a fetched source model lives inside its stage output directory.

``posezoo fetch`` writes ``build/source/<model>/model.<ext>`` (plus ``model.bin`` for OpenVINO
IR) and ``provenance.json``; later stages find the model file through :func:`model_file` instead
of guessing names.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PosezooError

EXTENSIONS = {"tflite": ".tflite", "tflite-int8": ".tflite", "onnx": ".onnx", "openvino-ir": ".xml", "pytorch": ".pt"}


def extension(fmt: str) -> str:
    """File extension of a registry source ``format``."""
    if fmt not in EXTENSIONS:
        raise PosezooError(f"source format {fmt!r} is unknown; use one of {', '.join(EXTENSIONS)}")
    return EXTENSIONS[fmt]


def model_file(source_dir: Path, fmt: str) -> Path:
    """The model file inside a fetch output directory."""
    path = Path(source_dir) / f"model{extension(fmt)}"
    if not path.is_file():
        raise PosezooError(f"{path}: source model missing; run `posezoo fetch` (or `dvc repro`) first")
    return path
