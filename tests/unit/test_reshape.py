"""Resolution sweeps: reshaping a fully convolutional float ONNX and verifying it against the source."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.convert.reshape import input_size, reshape_input
from pipeline.convert.tflite_to_onnx import tflite_to_onnx
from pipeline.convert.verify import compare_models
from pipeline.errors import PosezooError
from pipeline.registry import load_model

from tests.conftest import TINY_SIZE, photo_manifests

pytestmark = pytest.mark.usefixtures("tiny_env")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 6, 3) / "manifest.json"


def test_fully_convolutional_model_takes_another_size(tmp_path: Path, tiny_model: Path, manifest: Path) -> None:
    """The tiny net (convs + global mean + dense) runs at 48 px; the ONNX matches the TFLite source resized to 48."""
    onnx_path = tmp_path / "model.onnx"
    tflite_to_onnx(tiny_model, onnx_path, opset=17)
    assert input_size(onnx_path) == (TINY_SIZE, TINY_SIZE)
    reshape_input(onnx_path, 48)
    assert input_size(onnx_path) == (48, 48)
    spec = replace(load_model("tiny_landmarks").input, height=48, width=48)
    report = compare_models(tiny_model, onnx_path, manifest, spec, atol=1e-3, rtol=1e-4, max_samples=3)
    assert report["samples"] == 3 and all(o["ok"] for o in report["outputs"])


def test_a_model_with_a_fixed_spatial_size_is_rejected(tmp_path: Path) -> None:
    """Flatten + Dense needs exactly the native feature-map size: a one-line error, file untouched."""
    import tensorflow as tf

    inp = tf.keras.Input((16, 16, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(4, 3, strides=2, padding="same")(inp)
    out = tf.keras.layers.Dense(2)(tf.keras.layers.Flatten()(x))
    source = tmp_path / "fixed.tflite"
    source.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert())
    onnx_path = tmp_path / "model.onnx"
    tflite_to_onnx(source, onnx_path, opset=17)
    before = onnx_path.read_bytes()
    with pytest.raises(PosezooError, match=r"model\.onnx: the model does not take a 32x32 input \(native 16x16\).*not fully convolutional"):
        reshape_input(onnx_path, 32)
    assert onnx_path.read_bytes() == before
