"""Shared fixtures: a tiny float TFLite landmark model, its registry entry, and test photos.

Everything here is built by the tests themselves (no network, no shared data), so the unit
tests run on any machine.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POSEZOO_SHARED", REPO.parent / "shared"))
TINY_KEYPOINTS = 5
TINY_SIZE = 32


def pytest_configure(config: pytest.Config) -> None:
    """Fix which Keras ``tf.keras`` is before any test imports onnx2tf.

    Importing onnx2tf sets TF_USE_LEGACY_KERAS=1, and TensorFlow resolves ``tf.keras`` once, at
    first use: without this, the tiny models the tests build are Keras 3 or tf_keras models
    depending on test order, and the two order a multi-output model's TFLite outputs differently.
    """
    import tensorflow as tf

    assert tf.keras.Model is not None


def build_tiny_tflite(path: Path, seed: int = 0) -> Path:
    """A 32×32 conv net regressing 5 (x, y) keypoints in input pixels plus a presence score."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((TINY_SIZE, TINY_SIZE, 3), batch_size=1, name="image")
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = tf.keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    points = tf.keras.layers.Dense(TINY_KEYPOINTS * 2, activation="sigmoid")(x) * float(TINY_SIZE)
    score = tf.keras.layers.Dense(1, activation="sigmoid")(x)
    model = tf.keras.Model(inp, [points, score])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path.write_bytes(converter.convert())
    return path


def write_registry_entry(folder: Path, name: str, model_path: Path) -> Path:
    """A registry YAML for the tiny model (kind: local source, pinned sha256)."""
    entry = {
        "name": name,
        "family": "tiny",
        "task": "test",
        "description": "tiny test model",
        "license": "Apache-2.0",
        "source": "local",
        "sources": [
            {
                "id": "local",
                "kind": "local",
                "format": "tflite",
                "path": str(model_path),
                "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
                "size": model_path.stat().st_size,
                "license": "Apache-2.0",
            }
        ],
        "input": {"height": TINY_SIZE, "width": TINY_SIZE, "channels": 3, "layout": "NHWC", "color": "RGB", "range": [0.0, 1.0], "resize": "stretch"},
        "resolutions": [TINY_SIZE],
        "outputs": {"keypoints": 1},  # Keras writes the score first in the subgraph output order
        "decoder": {"kind": "landmarks_flat", "values_per_point": 2, "coords": "input_pixels"},
        "keypoints": {"count": TINY_KEYPOINTS, "names": [f"p{i}" for i in range(TINY_KEYPOINTS)]},
        "reference": {"card": None, "figures": []},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    return path


def make_photos(folder: Path, count: int = 6, seed: int = 0) -> list[Path]:
    """Small test photos with structure (gradients + blobs); one grayscale, one RGBA."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = 48 + 8 * i, 64
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 4 + i * 20) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], axis=-1).astype(np.float32)
        base += rng.normal(0, 20, base.shape)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        if i == 1:
            img = img.convert("L")
        if i == 2:
            img = img.convert("RGBA")
        path = folder / f"photo_{i}.{'png' if i in (1, 2) else 'jpg'}"
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny float TFLite model file."""
    return build_tiny_tflite(tmp_path_factory.mktemp("tiny") / "tiny.tflite")


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A registry folder holding ``tiny_landmarks`` (set as $POSEZOO_REGISTRY by ``tiny_env``)."""
    folder = tmp_path_factory.mktemp("registry")
    write_registry_entry(folder, "tiny_landmarks", tiny_model)
    return folder


@pytest.fixture()
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_registry: Path, tmp_path: Path) -> Path:
    """Registry with the tiny model and a private fetch cache; returns the cache dir."""
    monkeypatch.setenv("POSEZOO_REGISTRY", str(tiny_registry))
    monkeypatch.setenv("POSEZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of six generated photos (one grayscale, one RGBA)."""
    folder = tmp_path_factory.mktemp("photos")
    make_photos(folder)
    return folder


def photo_manifests(out: Path, photo_folder: Path, num_calibration: int = 12, num_holdout: int = 6) -> Path:
    """Write calibration + held-out manifests of the test photos into ``out``; return ``out``."""
    from pipeline.calibration.sampler import SamplingParams, write_manifests
    from pipeline.calibration.sources import resolve

    photos = resolve({"kind": "folder", "path": str(photo_folder)}, photo_folder)
    params = SamplingParams(
        num_calibration=num_calibration, num_holdout=num_holdout, seed=0, random_crop_side=(0.5, 1.0), box_scale=1.25, holdout_fraction=0.34, allow_fewer=False
    )
    write_manifests(photos, params, "test", True, out)
    return out
