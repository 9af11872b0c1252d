"""The one table of model file formats: its names, companions and lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PosezooError
from pipeline.formats import (
    MODEL_SUFFIXES,
    OPENVINO_IR,
    TFLITE,
    VARIANT_FORMATS,
    named,
    of_file,
    source_format,
    variant_format,
)


def test_an_ir_is_its_xml_and_bin_and_no_target_takes_it() -> None:
    assert variant_format("openvino") is OPENVINO_IR and named("openvino-ir") is OPENVINO_IR and of_file("m.XML") is OPENVINO_IR
    assert OPENVINO_IR.files(Path("d/m_p99.9.xml")) == [Path("d/m_p99.9.xml"), Path("d/m_p99.9.bin")]
    assert not OPENVINO_IR.estimated and OPENVINO_IR.not_on_targets() == "OpenVINO IR: the target's toolchain takes TFLite or ONNX"
    assert TFLITE.files(Path("m.tflite")) == [Path("m.tflite")] and TFLITE.not_on_targets() is None


def test_names_as_the_params_registry_and_metrics_spell_them() -> None:
    assert VARIANT_FORMATS == ("tflite", "onnx", "openvino") and MODEL_SUFFIXES == (".tflite", ".onnx", ".xml")
    assert source_format("tflite-int8") is TFLITE and source_format("keras").suffix == ".keras"
    assert named(None) is None and of_file("notes.txt") is None
    with pytest.raises(PosezooError, match="source format 'caffe' is unknown; use one of tflite, tflite-int8, onnx, onnx-qdq, openvino-ir, pytorch, keras"):
        source_format("caffe")
    with pytest.raises(PosezooError, match="int8 format 'xml' is unknown; use one of tflite, onnx, openvino"):
        variant_format("xml")
