"""Keras (``.keras``) → float ONNX with tf2onnx.

Why it exists: some vendors publish the float model of an int8 release only as a Keras file. ST's
model zoo ships its own MoveNet Lightning heatmap models as ``st_movenet_lightning_a100_heatmaps_
<res>.keras`` beside the int8 TFLite files it made from them. Converting that float model gives
posezoo the true float reference; the requantization path (dequantizing an int8 file) would start
from a model that already carries ST's quantization error.

Loading: a ``.keras`` file is a zip archive (``config.json``, ``model.weights.h5``,
``metadata.json``). Keras 3 cannot read archives written by Keras 2 (tf.keras up to TF 2.15, or
``tf_keras``: "Could not locate class 'Functional'"), and ``tf.keras`` is one or the other
depending on ``TF_USE_LEGACY_KERAS`` when TensorFlow first resolves it (importing onnx2tf sets it).
So the loader is picked from the archive's own ``metadata.json`` ``keras_version``: 3.x is loaded
by ``keras``, 2.x by ``tf_keras``, both with ``compile=False`` (no optimizer or loss is needed)
and in Keras' safe mode (a Lambda layer's serialized Python code is refused, never run).

Conversion: ``tf2onnx.convert.from_keras`` on a fixed input signature, batch 1 and the model's
own height × width × channels, giving the same kind of float ONNX as
:mod:`pipeline.convert.tflite_to_onnx`: NCHW input (``inputs_as_nchw``, the layout onnx2tf
expects), outputs in the Keras model's output order and layout, the Transpose/Split/Transpose
fold, and canonical names (byte-reproducible).
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

from pipeline.convert.tflite_to_onnx import tf2onnx_conversion
from pipeline.errors import PosezooError

log = logging.getLogger(__name__)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def keras_version(path: Path) -> str:
    """The Keras version that wrote the ``.keras`` archive ``path``; fails clearly on anything else."""
    path = Path(path)
    if not path.is_file():
        raise PosezooError(f"{path}: no such Keras file; run `posezoo fetch` first or check the path")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {"config.json", "metadata.json"} <= names:
                raise PosezooError(f"{path}: a zip archive but not a Keras .keras file (no config.json / metadata.json); check the source entry in the registry")
            version = str(json.loads(archive.read("metadata.json")).get("keras_version", ""))
    except (zipfile.BadZipFile, json.JSONDecodeError, OSError, EOFError) as err:
        raise PosezooError(f"{path}: not a readable Keras .keras archive ({_first_line(err)}); fetch it again or check the source entry in the registry") from err
    if not re.match(r"^[23]\.", version):
        raise PosezooError(f"{path}: metadata.json gives Keras version {version!r}; only files written by Keras 2 or 3 can be loaded")
    return version


def load_keras(path: Path) -> Any:
    """The model in the ``.keras`` file ``path``, loaded by the Keras major version that wrote it."""
    version = keras_version(path)
    if version.startswith("3."):
        import keras as loader
    else:
        import tf_keras as loader
    try:
        return loader.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as err:  # Keras raises ValueError / TypeError / OSError (h5py) for bad archives
        raise PosezooError(f"{path}: Keras {version} cannot load this model ({_first_line(err)}); fetch it again or check the source entry in the registry") from err


def _input_signature(model: Any, path: Path) -> Any:
    """A batch-1 float32 ``tf.TensorSpec`` of the model's one input, named after it."""
    import tensorflow as tf

    if len(model.inputs) != 1:
        raise PosezooError(f"{path}: the Keras model has {len(model.inputs)} inputs; posezoo models take one image")
    tensor = model.inputs[0]
    shape = list(tensor.shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]) or shape[0] not in (None, 1):
        raise PosezooError(f"{path}: the Keras model's input shape is {tuple(shape)}; posezoo needs a fixed (batch, height, width, channels) image input")
    if str(getattr(tensor.dtype, "name", tensor.dtype)) != "float32":
        raise PosezooError(f"{path}: the Keras model's input is {tensor.dtype}; posezoo feeds float32 pixels")
    name = tensor.name.split(":")[0]
    return tf.TensorSpec([1, *shape[1:]], tf.float32, name=name if re.fullmatch(r"[A-Za-z][\w.\-/]*", name) else "input")


def keras_to_onnx(src: Path, dest: Path, opset: int) -> dict[str, Any]:
    """Convert the Keras file ``src`` to the float ONNX ``dest`` (atomic, NCHW input, canonical names).

    Returns what the convert report records: the Keras version that wrote the file and the input
    shape converted. Unsupported TensorFlow ops are named in the error.
    """
    from tf2onnx.convert import from_keras

    src = Path(src)
    version = keras_version(src)
    model = load_keras(src)
    spec = _input_signature(model, src)
    with tf2onnx_conversion(src, dest, opset) as write:
        proto, _ = from_keras(model, input_signature=[spec], opset=opset, inputs_as_nchw=[spec.name])
        write(proto)
    log.info("converted %s (Keras %s) -> %s (opset %d)", src.name, version, dest, opset)
    return {"keras_version": version, "input_shape": [int(d) for d in spec.shape]}
