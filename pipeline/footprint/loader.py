"""Tell a TFLite flatbuffer from an ONNX model by content, and hand it to the right reader.

The file name is only used to word the error: a ``.onnx`` that is really a flatbuffer is read as
the flatbuffer it is.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PosezooError
from pipeline.footprint.ir import Graph
from pipeline.footprint.onnx_reader import parse_onnx, read_onnx
from pipeline.footprint.tflite_reader import read_tflite

#: TFLite's flatbuffer file identifier, stored at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"


def read_graph(path: Path | str) -> Graph:
    """Read ``path`` (TFLite or ONNX) into the common graph; PosezooError if it is neither."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PosezooError(f"{path}: cannot read the model ({err.strerror}); pass an existing .tflite or .onnx file") from err
    if data[4:8] == TFLITE_IDENTIFIER:
        return read_tflite(path, data)
    model = parse_onnx(data)
    if model is not None:
        return read_onnx(path, model)
    first = data[:8].hex(" ") or "empty file"
    if path.suffix.lower() == ".tflite":
        raise PosezooError(
            f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier at byte 4; first bytes {first}); "
            "re-export or re-download the model"
        )
    if path.suffix.lower() == ".onnx":
        raise PosezooError(
            f"{path}: truncated or corrupt ONNX model (not a parseable ModelProto with a graph; first "
            f"bytes {first}); re-export or re-download the model"
        )
    raise PosezooError(
        f"{path}: neither a TFLite flatbuffer nor an ONNX model (first bytes {first}); pass a .tflite or .onnx file"
    )
