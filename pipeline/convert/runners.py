"""Run a model file of any supported format on one input and return its outputs in a fixed order.

Outputs are always returned in the *source model's* output order, so outputs can be compared
across formats by position: a source TFLite is read in its subgraph output order (the order
tf2onnx keeps in the ONNX), and SavedModels / TFLite files made from them expose signature keys
``output_<i>`` (onnx2tf's names, in ONNX output order) which are sorted by ``i`` — mapped by
signature key, never by tensor name, which converters rename. A source TFLite's own signature
keys are ignored: Keras-made files number them in a different order than their subgraph. Integer TFLite inputs/outputs are (de)quantized with the
tensor's own scale and zero point.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.errors import PosezooError
from pipeline.threads import tensorflow

Runner = Callable[[np.ndarray], list[np.ndarray]]

_OUTPUT_KEY = re.compile(r"^output_(\d+)$")


def _ordered(outputs: dict[str, Any]) -> list[np.ndarray]:
    keys = list(outputs)
    if all(_OUTPUT_KEY.match(k) for k in keys):
        keys.sort(key=lambda k: int(_OUTPUT_KEY.match(k).group(1)))  # type: ignore[union-attr]
    return [np.asarray(outputs[k], dtype=np.float32) for k in keys]


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Real-valued ``x`` as the tensor's dtype, with its scale and zero point.

    An integer tensor with scale 0 has no quantization parameters: it carries the values
    themselves (MoveNet's int8 release takes plain uint8 pixels), so ``x`` is rounded and clipped
    to the dtype instead of divided by zero.
    """
    scale, zero = detail["quantization"]
    if detail["dtype"] in (np.int8, np.uint8, np.int16):
        info = np.iinfo(detail["dtype"])
        q = np.round(x / scale) + zero if scale else np.round(x)
        return np.clip(q, info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Real values of an output tensor; integer tensors with scale 0 (unquantized) are only cast."""
    scale, zero = detail["quantization"]
    if detail["dtype"] in (np.int8, np.uint8, np.int16) and scale:
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def tflite_runner(path: Path, source_order: bool = False) -> Runner:
    """Runner for a TFLite file (float or integer I/O) on the LiteRT interpreter.

    ``source_order`` reads outputs in subgraph order (a source model); otherwise by the
    ``output_<i>`` signature keys when the file has them (a model posezoo exported).

    A float source model (the reference every conversion and int8 variant is judged against)
    runs on LiteRT's built-in fp32 kernels, without the default XNNPACK delegate: on CPUs with
    AVX512-FP16, XNNPACK computes a model with float16 weights (MoveNet's Kaggle release) in fp16,
    0.035-0.05 away from fp32 on a tiny test net against 1.2e-7 with the built-in kernels.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        if source_order and interpreter.get_input_details()[0]["dtype"] == np.float32:
            interpreter = Interpreter(
                model_path=str(path), num_threads=1, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise PosezooError(f"{path}: the TFLite interpreter cannot load it ({str(err).splitlines()[0]}); re-export the model") from err
    signatures = interpreter.get_signature_list()
    outputs_by_key = [k for sig in signatures.values() for k in sig["outputs"]]
    if signatures and not source_order and all(_OUTPUT_KEY.match(k) for k in outputs_by_key):
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        in_details, out_details = runner.get_input_details(), runner.get_output_details()
        (in_name,) = in_details

        def run_signature(x: np.ndarray) -> list[np.ndarray]:
            raw = runner(**{in_name: _quantize(x, in_details[in_name])})
            return _ordered({k: _dequantize(v, out_details[k]) for k, v in raw.items()})

        return run_signature

    (in_detail,) = interpreter.get_input_details()
    out_details = interpreter.get_output_details()

    def run_plain(x: np.ndarray) -> list[np.ndarray]:
        if tuple(x.shape) != tuple(interpreter.get_input_details()[0]["shape"]):
            # A resolution sweep runs a fully convolutional source at another input size.
            try:
                interpreter.resize_tensor_input(in_detail["index"], list(x.shape))
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as err:
                raise PosezooError(f"{path}: the TFLite model cannot run on a {x.shape} input ({str(err).splitlines()[0]}); pick its native resolution") from err
        interpreter.set_tensor(in_detail["index"], _quantize(x, in_detail))
        interpreter.invoke()
        return [_dequantize(interpreter.get_tensor(d["index"]), d) for d in out_details]

    return run_plain


def ort_session(model: str | bytes, optimization: str = "basic", threads: int = 1) -> Any:
    """An onnxruntime CPU session for a model path or serialized model.

    Numerics (every caller but the latency benchmark) use the default single thread, which keeps
    reductions in one order so results repeat exactly, and ``optimization`` ``basic`` (see
    :func:`onnx_runner` for why never higher) or ``none``. ``all`` (QDQ fused into integer
    kernels) and more threads are for speed measurements only.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnx_runner(path: Path) -> Runner:
    """Runner for an ONNX file on onnxruntime's CPU provider (single thread: reproducible).

    Like every runner it takes NHWC input; it transposes for an NCHW model itself.

    Graph optimization stops at ORT_ENABLE_BASIC, so a QDQ model runs as written (each
    QuantizeLinear / DequantizeLinear pair simulated exactly): that is the model's meaning, the one
    NPU compilers consume and TFLite's int8 kernels agree with. Measured with onnxruntime 1.22.1 on
    hand_landmark_lite's per-channel QDQ file: with the extended level's QDQ fusions into integer
    kernels, two consecutive runs on the same input differ by up to 3.3 and the mean drift over
    the held-out crops is 22.6 px (its value even changes between processes), against 5.03 px,
    run-to-run identical, at the basic level (TFLite int8 of the same model: 5.1 px).
    """
    try:
        session = ort_session(str(path))
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise PosezooError(f"{path}: onnxruntime cannot load it ({str(err).splitlines()[0]}); re-export the model") from err
    (model_input,) = session.get_inputs()
    nchw = onnx_input_layout(Path(path)) == "NCHW"

    def run(x: np.ndarray) -> list[np.ndarray]:
        feed = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if nchw else x
        return [np.asarray(y, dtype=np.float32) for y in session.run(None, {model_input.name: feed})]

    return run


def keras_runner(path: Path) -> Runner:
    """Runner for a Keras ``.keras`` file (a float source), outputs in the model's output order.

    The model is loaded by the Keras version that wrote it (see
    :func:`pipeline.convert.keras_to_onnx.load_keras`) and called in inference mode.
    """
    from pipeline.convert.keras_to_onnx import load_keras

    model = load_keras(path)

    def run(x: np.ndarray) -> list[np.ndarray]:
        try:
            outputs = model(x, training=False)
        except (ValueError, TypeError) as err:  # Keras raises these for an input it cannot take
            raise PosezooError(f"{path}: the Keras model cannot run on a {x.shape} input ({str(err).strip().splitlines()[0]}); pick its native resolution") from err
        if isinstance(outputs, dict):
            outputs = [outputs[name] for name in model.output_names]
        elif not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [np.asarray(y, dtype=np.float32) for y in outputs]

    return run


def savedmodel_runner(path: Path) -> Runner:
    """Runner for a SavedModel's ``serving_default`` signature."""
    tf = tensorflow()

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    (in_name,) = fn.structured_input_signature[1]

    def run(x: np.ndarray) -> list[np.ndarray]:
        return _ordered({k: v.numpy() for k, v in fn(**{in_name: tf.constant(x)}).items()})

    return run


def _openvino_reason(err: Exception) -> str:
    """The one informative line of an OpenVINO exception (they span lines of C++ source locations)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(err).__name__])[-1 if useful else 0]


def read_openvino_model(path: Path) -> Any:
    """``openvino.Model`` of an IR ``.xml`` (its ``.bin`` beside it); load failures as one-line errors.

    A missing or truncated ``.bin`` and malformed XML surface from OpenVINO as multi-line C++
    traces; this keeps the one line that says what is wrong.
    """
    import openvino as ov

    path = Path(path)
    if not path.is_file():
        raise PosezooError(f"{path}: no such OpenVINO IR file; run `posezoo fetch` first or check the path")
    try:
        return ov.Core().read_model(str(path))
    except Exception as err:  # OpenVINO raises RuntimeError with C++ traces
        raise PosezooError(f"{path}: OpenVINO cannot read this IR ({_openvino_reason(err)}); re-fetch the .xml and its .bin") from err


def openvino_input_layout(model: Any) -> str:
    """NCHW or NHWC of an ``openvino.Model``'s single input, by the same rule as :func:`onnx_input_layout`."""
    shape = model.inputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else 0 for d in shape] if shape.rank.is_static else []
    return "NCHW" if len(dims) == 4 and dims[1] in (1, 3) and dims[3] not in (1, 3) else "NHWC"


def openvino_cpu_properties(threads: int) -> dict[Any, Any]:
    """OpenVINO CPU compile properties: ``threads`` inference threads and float32 inference precision.

    Left to itself the CPU plugin picks bf16 on hosts with AMX / AVX512-BF16 (the development
    machine): float models would move landmarks by ~1 px, and int8 QDQ ONNX files fail to compile
    there ("No suitable implementations"). The hint only concerns float parts: quantized
    (FakeQuantize) layers still run as int8 kernels.
    """
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    return {hints.inference_precision: ov.Type.f32, props.inference_num_threads: threads}


def openvino_runner(path: Path) -> Runner:
    """Runner for an OpenVINO IR (``.xml`` + ``.bin``) on OpenVINO's CPU plugin.

    Compiled with one inference thread (reductions in one order: results repeat) and float32
    inference precision: left to itself the CPU plugin runs bf16 on CPUs that have it (AVX-512
    BF16 / AMX), which moves landmarks by ~1 px — the IR is a float reference, so that is drift
    it must not add. Takes NHWC input like every runner (transposes for an NCHW IR, the OMZ
    layout); outputs come in the IR's Result order, as float32.
    """
    import openvino as ov

    model = read_openvino_model(path)
    try:
        compiled = ov.Core().compile_model(model, "CPU", openvino_cpu_properties(1))
    except Exception as err:
        raise PosezooError(f"{path}: OpenVINO's CPU plugin cannot compile this IR ({_openvino_reason(err)}); re-export the model") from err
    request = compiled.create_infer_request()
    nchw = openvino_input_layout(model) == "NCHW"
    n_outputs = len(compiled.outputs)

    def run(x: np.ndarray) -> list[np.ndarray]:
        feed = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if nchw else x, dtype=np.float32)
        request.infer({0: feed})
        return [np.array(request.get_output_tensor(i).data, dtype=np.float32) for i in range(n_outputs)]

    return run


@lru_cache(maxsize=None)
def onnx_input_layout(path: Path) -> str:
    """NCHW or NHWC, read from the ONNX input's shape (channels = 1 or 3 on axis 1 means NCHW)."""
    import onnx

    dims = [d.dim_value for d in onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
    return "NCHW" if len(dims) == 4 and dims[1] in (1, 3) and dims[3] not in (1, 3) else "NHWC"


def runner_for(path: Path, source_order: bool = False) -> Runner:
    """Runner (NHWC input) for a model file, chosen by its format (file suffix or SavedModel directory).

    Pass ``source_order=True`` for a fetched source model (see :func:`tflite_runner`).
    """
    path = Path(path)
    if path.is_dir():
        return savedmodel_runner(path)
    if path.suffix == ".onnx":
        return onnx_runner(path)
    if path.suffix == ".tflite":
        return tflite_runner(path, source_order)
    if path.suffix == ".xml":
        return openvino_runner(path)
    if path.suffix == ".keras":
        return keras_runner(path)
    raise PosezooError(f"{path}: no runner for this file type; pass a .tflite, .onnx, OpenVINO .xml, Keras .keras or SavedModel directory")
