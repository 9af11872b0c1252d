"""Tell a TFLite flatbuffer from an ONNX model by content, and hand it to the right reader.

The file name is only used to word the error: a ``.onnx`` that is really a flatbuffer is read as
the flatbuffer it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import PosezooError
from pipeline.footprint.ir import Graph
from pipeline.footprint.onnx_reader import parse_onnx, read_onnx
from pipeline.footprint.tflite_reader import read_tflite
from pipeline.formats import FORMATS, OPENVINO_IR, of_file

#: TFLite's flatbuffer file identifier, stored at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"


def read_graph(path: Path | str) -> Graph:
    """Read ``path`` (TFLite or ONNX) into the common graph; PosezooError if it is neither."""
    path = Path(path)
    kind = of_file(path)
    if kind is not None and not kind.estimated:
        readable = " / ".join(f.label for f in FORMATS if f.estimated)
        raise PosezooError(f"{path}: {kind.label} is not read by the footprint estimator ({readable} only); use openvino_ir_sizes for an OpenVINO IR's sizes")
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


#: Why an OpenVINO IR gets sizes only (written into its metrics as a note).
OPENVINO_IR_NOTE = (
    "OpenVINO IR: the footprint estimator (STM32Cube.AI conventions, TFLite Micro arena planner) and the targets "
    "of targets.yaml cover TFLite and ONNX only; no MACC, activation RAM or target verdicts for this file"
)


def openvino_ir_sizes(path: Path | str) -> dict[str, Any]:
    """What an OpenVINO IR itself says about its size: file sizes and its constants' bytes by type.

    ``weights_bytes`` is the sum of every Constant of the IR (int8 weights, float32 scales and
    biases, int64 shapes), ``weights_by_dtype`` the same by element type; the ``.bin`` can be a
    little smaller (OpenVINO stores identical constants once). ``targets`` is empty and
    ``notes`` says why (:data:`OPENVINO_IR_NOTE`): nothing here is estimated.
    """
    from pipeline.convert.runners import read_openvino_model

    path = Path(path)
    model = read_openvino_model(path)
    by_dtype: dict[str, int] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            dtype = op.get_output_element_type(0).to_string()
            by_dtype[dtype] = by_dtype.get(dtype, 0) + int(op.get_byte_size())
    total = sum(by_dtype.values())
    return {
        "model": path.name,
        "format": OPENVINO_IR.name,
        "op_count": sum(1 for op in model.get_ordered_ops() if op.get_type_name() not in ("Parameter", "Result", "Constant")),
        "xml_bytes": path.stat().st_size,
        "bin_bytes": OPENVINO_IR.files(path)[1].stat().st_size,
        "weights_bytes": total,
        "weights_kib": round(total / 1024, 2),
        "weights_by_dtype": dict(sorted(by_dtype.items())),
        "targets": {},
        "notes": [OPENVINO_IR_NOTE],
    }
