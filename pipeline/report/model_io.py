"""The input and output tensors a model file declares (name, shape, dtype, int8 scale / zero point).

A card's input / output table must describe the file a user deploys: the int8 TFLite takes int8
pixels with a scale and zero point, the ONNX QDQ file still takes float32. So the table is read
from each variant file itself (parsed, never executed), not from the registry's float description.
Formats without a reader here give ``None`` and the card says "not measured".
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.errors import PosezooError
from pipeline.formats import ONNX, OPENVINO_IR, TFLITE, of_file


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output as declared in the file."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    scale: float | None = None  # int8 TFLite I/O: real = scale * (q - zero_point)
    zero_point: int | None = None


@dataclass(frozen=True)
class ModelIO:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


def read_io(path: Path) -> ModelIO | None:
    """Inputs and outputs of a .tflite, .onnx or OpenVINO .xml file; None for other formats."""
    kind = of_file(path)
    reader = _READERS.get(kind.name) if kind is not None else None
    if reader is None:
        return None
    try:
        return reader(path)
    except (OSError, ValueError, ET.ParseError) as err:
        raise PosezooError(f"{path}: cannot read the model's inputs/outputs ({err}); re-run `dvc repro` to rebuild it") from err


def _tflite(path: Path) -> ModelIO:
    import tflite
    from tflite.TensorType import TensorType

    names = {v: k.lower() for k, v in vars(TensorType).items() if not k.startswith("_")}
    data = path.read_bytes()
    if data[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer")
    sub = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0)

    def info(index: int) -> TensorInfo:
        t = sub.Tensors(index)
        q = t.Quantization()
        scale = zero = None
        if q is not None and q.ScaleLength() == 1:
            scale, zero = float(q.Scale(0)), int(q.ZeroPoint(0))
        shape = tuple(int(t.Shape(k)) for k in range(t.ShapeLength()))
        return TensorInfo((t.Name() or b"").decode("utf-8", "replace"), shape, names.get(t.Type(), str(t.Type())), scale, zero)

    return ModelIO(
        tuple(info(sub.Inputs(k)) for k in range(sub.InputsLength())),
        tuple(info(sub.Outputs(k)) for k in range(sub.OutputsLength())),
    )


def _onnx(path: Path) -> ModelIO:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def info(value: onnx.ValueInfoProto) -> TensorInfo:
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim)
        return TensorInfo(value.name, shape, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name)

    return ModelIO(
        tuple(info(v) for v in model.graph.input if v.name not in initializers),
        tuple(info(v) for v in model.graph.output),
    )


_IR_TYPES = {"f32": "float32", "fp32": "float32", "f16": "float16", "fp16": "float16", "i8": "int8", "u8": "uint8", "i32": "int32", "i64": "int64"}


def _openvino_ir(path: Path) -> ModelIO:
    """Parameters and Results of an OpenVINO IR (v10/v11 XML); shapes from their port dims."""
    root = ET.parse(path).getroot()
    layers = root.find("layers")
    if layers is None:
        raise ValueError("no <layers> element: not an OpenVINO IR")

    def dims(port: ET.Element | None) -> tuple[int | str, ...]:
        if port is None:
            return ()
        return tuple(int(d.text) if (d.text or "").strip().lstrip("-").isdigit() else (d.text or "?").strip() for d in port.findall("dim"))

    inputs, outputs = [], []
    for layer in layers.findall("layer"):
        kind = layer.get("type")
        if kind == "Parameter":
            data = layer.find("data")
            et = data.get("element_type", "?") if data is not None else "?"
            inputs.append(TensorInfo(layer.get("name", ""), dims(layer.find("output/port")), _IR_TYPES.get(et, et)))
        elif kind == "Result":
            port = layer.find("input/port")
            et = port.get("precision", "?").lower() if port is not None else "?"
            outputs.append(TensorInfo(layer.get("name", ""), dims(port), _IR_TYPES.get(et, et)))
    return ModelIO(tuple(inputs), tuple(outputs))


#: The reader of each format (by :attr:`~pipeline.formats.ModelFormat.name`).
_READERS: dict[str, Callable[[Path], ModelIO]] = {TFLITE.name: _tflite, ONNX.name: _onnx, OPENVINO_IR.name: _openvino_ir}
