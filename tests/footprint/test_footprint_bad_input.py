"""Bad input gives one PosezooError line naming the file and the fix, never a parser traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PosezooError
from pipeline.footprint import estimate


def _error(path: Path) -> str:
    with pytest.raises(PosezooError) as caught:
        estimate(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.txt", b"just some text, not a model\n", "neither a TFLite flatbuffer nor an ONNX model"),
        ("empty.bin", b"", "neither a TFLite flatbuffer nor an ONNX model"),
        ("model.tflite", b"\x00" * 64, "not a TFLite flatbuffer"),
        ("model.onnx", b"\xff" * 64, "truncated or corrupt ONNX model"),
    ],
)
def test_not_a_model(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert expected in _error(path)


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read the model" in _error(tmp_path / "absent.tflite")


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.3, 0.5, 0.7, 0.9])
def test_truncated_tflite(unit_tflite: Path, tmp_path: Path, fraction: float) -> None:
    data = unit_tflite.read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert "truncated or corrupt TFLite flatbuffer" in _error(path)


@pytest.mark.slow
def test_no_cut_point_leaks_a_raw_exception(unit_tflite: Path, tmp_path: Path) -> None:
    data = unit_tflite.read_bytes()
    path = tmp_path / "cut.tflite"
    for end in range(0, len(data), 41):
        path.write_bytes(data[:end])
        with pytest.raises(PosezooError):
            estimate(path)


def test_truncated_onnx(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    data = onnx_files["qdq"].read_bytes()
    path = tmp_path / "cut.onnx"
    for end in range(0, len(data), 7):
        path.write_bytes(data[:end])
        assert "truncated or corrupt ONNX model" in _error(path)
