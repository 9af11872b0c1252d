"""The exporter of each int8 format, behind one call: a prepared scheme directory in, one variant out.

The quantize stage and the recipe search ask here, never per format, whether a config can be
exported (:func:`check_exportable`: only the NNCF IR refuses some, 16-bit activations) and to
export it (:func:`export_variant`). Every exporter starts from the optimize stage's output: the
TFLite one from its SavedModel (with the float ONNX for shared ranges and float layers), the ONNX
and OpenVINO ones from its float ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.formats import ONNX, OPENVINO_IR, TFLITE, variant_format
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.onnx import quantize_onnx
from pipeline.quantize.openvino import check_config, export_openvino_int8
from pipeline.quantize.ranges import RangeTable
from pipeline.quantize.tflite import quantize_tflite
from pipeline.registry import InputSpec

#: (prepared dir, destination, manifest, input spec, config, where, ranges) -> what the sidecar adds.
Export = Callable[[Path, Path, Path, InputSpec, QuantConfig, str, "RangeTable | None"], dict[str, Any]]


@dataclass(frozen=True)
class Exporter:
    export: Export
    #: Refuses a config the exporter cannot honour (``where`` names the recipe); None: takes every config.
    check: Callable[[QuantConfig, str], None] | None = None


def _tflite(prepared: Path, dest: Path, manifest: Path, spec: InputSpec, config: QuantConfig, where: str, ranges: RangeTable | None) -> dict[str, Any]:
    quantize_tflite(prepared / "saved_model", dest, manifest, spec, config, float_onnx=prepared / "model.onnx", ranges=ranges)
    return {}


def _onnx(prepared: Path, dest: Path, manifest: Path, spec: InputSpec, config: QuantConfig, where: str, ranges: RangeTable | None) -> dict[str, Any]:
    quantize_onnx(prepared / "model.onnx", dest, manifest, spec, config, ranges=ranges)
    return {}


def _openvino(prepared: Path, dest: Path, manifest: Path, spec: InputSpec, config: QuantConfig, where: str, ranges: RangeTable | None) -> dict[str, Any]:
    return {"nncf": export_openvino_int8(prepared / "model.onnx", dest, manifest, spec, config, where, ranges=ranges)}


EXPORTERS = {TFLITE.variant: Exporter(_tflite), ONNX.variant: Exporter(_onnx), OPENVINO_IR.variant: Exporter(_openvino, check_config)}


def _exporter(fmt: str) -> Exporter:
    variant_format(fmt)  # a one-line error naming the known formats
    return EXPORTERS[fmt]


def check_exportable(fmt: str, config: QuantConfig, where: str) -> None:
    """PosezooError (naming ``where``) if ``fmt``'s exporter cannot honour ``config``."""
    check = _exporter(fmt).check
    if check is not None:
        check(config, where)


def export_variant(fmt: str, prepared: Path, dest: Path, manifest: Path, spec: InputSpec, config: QuantConfig, where: str, ranges: RangeTable | None) -> dict[str, Any]:
    """Write the ``fmt`` variant of the prepared directory ``prepared`` to ``dest``; returns what its sidecar adds."""
    return _exporter(fmt).export(Path(prepared), dest, manifest, spec, config, where, ranges)
