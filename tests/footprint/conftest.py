"""Fixtures of the footprint tests: ST's reference files (skipped when absent) and built models."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from tests.footprint import models

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("POSEZOO_SHARED", REPO / ".." / "shared"))
REFERENCE = SHARED / "models" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``shared/models/reference`` (ST's int8 YOLOv8n-pose files); the test is skipped without it."""
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} absent: the ST reference models are only in the project's shared folder")
    return REFERENCE


@pytest.fixture(scope="session")
def unit_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-counted int8 TFLite model of :func:`models.unit_body`."""
    path = tmp_path_factory.mktemp("footprint") / "unit_int8.tflite"
    path.write_bytes(models.keras_tflite(models.unit_body, models.UNIT_SHAPE))
    return path


@pytest.fixture(scope="session")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The hand-built ONNX models: ``qdq``, ``float`` (symbolic batch), ``unknown`` (+ Hardmax)."""
    folder = tmp_path_factory.mktemp("onnx")
    built = {
        "qdq": models.qdq_onnx(),
        "float": models.float_onnx(batch="N"),
        "unknown": models.float_onnx(extra_op="Hardmax"),
    }
    paths = {}
    for name, model in built.items():
        paths[name] = folder / f"{name}.onnx"
        onnx.save(model, paths[name])
    return paths
