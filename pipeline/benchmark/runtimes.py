"""One ready-to-call inference step per runtime: LiteRT, onnxruntime, OpenVINO.

Each ``prepare_*`` function loads and compiles a model once, binds a fixed input and returns a
:class:`Prepared` whose ``step()`` runs one batch-1 inference, so that timing measures inference
only (no loading, compilation or input generation).

The input is seeded random data of the model's own input dtype and shape (int8 values for an
int8-input TFLite). The latency of these CNNs does not depend on the input's content — no
data-dependent control flow, no sparsity shortcuts in the CPU kernels — so random data times
the same work a photo would.

Thread count is fixed per runtime (LiteRT ``num_threads``; onnxruntime intra-op threads with a
single inter-op thread and sequential execution; OpenVINO ``INFERENCE_NUM_THREADS``) so figures
are comparable across runtimes and with the other developers' jobs sharing the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.convert.runners import openvino_cpu_properties, ort_session
from pipeline.errors import PosezooError

#: Seed of the random input (any fixed value: content does not change latency, see above).
INPUT_SEED = 0

_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


@dataclass
class Prepared:
    """A compiled model with its input bound: ``step()`` runs one inference."""

    step: Callable[[], Any]
    versions: str


def package_version(*names: str) -> str:
    """``"<name> <version>"`` of the first installed distribution among ``names``."""
    for name in names:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            continue
    return f"{names[0]} (version unknown)"


def random_input(shape: Sequence[int], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """Seeded random data of ``dtype``: [0, 1) for floats, the full range for 8-bit integers,
    zeros for wider integers (indices or lengths, where a random value could be invalid)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.random(tuple(shape), dtype=np.float32).astype(dtype)
    if np.issubdtype(dtype, np.integer) and dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return rng.integers(int(info.min), int(info.max) + 1, size=tuple(shape)).astype(dtype)
    return np.zeros(tuple(shape), dtype)


def static_shape(path: Path, name: str, dims: Sequence[Any]) -> list[int]:
    """``dims`` with a symbolic or unknown batch dimension set to 1 (batch-1 benchmark).

    Any other unknown dimension cannot be guessed, so it is an error.
    """
    shape = []
    for axis, dim in enumerate(dims):
        if isinstance(dim, (int, np.integer)) and dim > 0:
            shape.append(int(dim))
        elif axis == 0:
            shape.append(1)
        else:
            raise PosezooError(f"{path}: input '{name}' has a dynamic dimension {axis} ({dim}); export the model with a fixed input shape")
    return shape


def prepare_litert(path: Path, threads: int) -> Prepared:
    """The LiteRT (ai-edge-litert, else TensorFlow's) interpreter with ``threads`` threads.

    The interpreter's default delegate set (XNNPACK) applies, as in a deployment with LiteRT.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter

        versions = package_version("ai-edge-litert")
    except ImportError:  # the issue allows either; TensorFlow ships the same interpreter
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
        versions = package_version("tensorflow", "tensorflow-cpu")
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(INPUT_SEED)
    for detail in interpreter.get_input_details():
        shape = static_shape(path, detail["name"], list(detail["shape_signature"]) if len(detail["shape_signature"]) else list(detail["shape"]))
        if list(detail["shape"]) != shape:
            interpreter.resize_tensor_input(detail["index"], shape)
            interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], random_input(detail["shape"], detail["dtype"], rng))
    return Prepared(interpreter.invoke, versions)


def prepare_onnxruntime(model: Path | bytes, threads: int, path: Path) -> Prepared:
    """An onnxruntime CPU session of ``model`` (a file or serialized bytes; ``path`` names it).

    All graph optimizations are on (ORT_ENABLE_ALL): this is a speed measurement, so QDQ groups
    are fused into onnxruntime's integer kernels — unlike the numerics checks, which keep the
    basic level.
    """
    session = ort_session(model if isinstance(model, bytes) else str(model), optimization="all", threads=threads)
    rng = np.random.default_rng(INPUT_SEED)
    feeds = {}
    for inp in session.get_inputs():
        if inp.type not in _ONNX_DTYPES:
            raise PosezooError(f"{path}: input '{inp.name}' has type {inp.type}, which the benchmark cannot generate; use a model with tensor inputs")
        feeds[inp.name] = random_input(static_shape(path, inp.name, inp.shape), _ONNX_DTYPES[inp.type], rng)
    return Prepared(lambda: session.run(None, feeds), package_version("onnxruntime", "onnxruntime-gpu"))


_CORE: Any = None


def _openvino_core() -> Any:
    """One shared ``openvino.Core`` (creating it loads the plugins)."""
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


def openvino_config(threads: int) -> dict[Any, Any]:
    """The runners' CPU properties (``threads`` threads, f32 precision for every model, float or
    int8: see :func:`openvino_cpu_properties`) plus the LATENCY performance hint."""
    import openvino.properties.hint as hints

    return {**openvino_cpu_properties(threads), hints.performance_mode: hints.PerformanceMode.LATENCY}


def prepare_openvino(path: Path, threads: int) -> Prepared:
    """``path`` (.tflite, .onnx or OpenVINO IR .xml) read by OpenVINO and compiled for CPU."""
    import openvino as ov

    core = _openvino_core()
    model = core.read_model(str(path))
    if any(inp.get_partial_shape().is_dynamic for inp in model.inputs):
        shapes = {}
        for inp in model.inputs:
            dims = [d.get_length() if d.is_static else None for d in inp.get_partial_shape()]
            shapes[inp.get_any_name()] = static_shape(path, inp.get_any_name(), dims)
        model.reshape(shapes)
    compiled = core.compile_model(model, "CPU", openvino_config(threads))
    request = compiled.create_infer_request()
    rng = np.random.default_rng(INPUT_SEED)
    for index, port in enumerate(compiled.inputs):
        array = random_input(list(port.get_shape()), port.get_element_type().to_dtype(), rng)
        request.set_input_tensor(index, ov.Tensor(array))  # copies the data into the tensor
    return Prepared(request.infer, package_version("openvino"))
