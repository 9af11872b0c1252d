"""Full-integer TFLite export with TFLiteConverter.

int8 weights; int8 activations with int8 input and output tensors (what MCU/NPU runtimes want),
or, with ``activation_bits: 16``, TFLite's 16x8 mode
(``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``: int16 activations, int8
weights) with **int16** input and output tensors — the model stays integer-only end to end like
the int8 variants (no float Quantize/Dequantize at its edges), and posezoo's runners (de)quantize
int16 I/O with the tensor's scale. The representative dataset is read from the calibration
manifest. Per-tensor weights use the converter's ``_experimental_disable_per_channel`` switch —
the only knob TFLite exposes for it.

With the default config (MinMax, 8 bit, no float layers) and with MinMax at 16 bit, the
converter runs untouched. Otherwise the converter's quantization step is split where TFLite
itself splits it: it calibrates (``_experimental_calibrate_only``: a float flatbuffer whose
activation tensors carry the observed min/max), then posezoo

1. replaces each activation tensor's min/max with the shared range of the ONNX tensor holding the
   same values (:mod:`pipeline.quantize.tflite_match`; tensors with no ONNX counterpart —
   onnx2tf's explicit Pad tensors in BlazePose — get ranges computed on the TFLite float graph by
   the same method, and are counted and logged), and
2. quantizes the edited model as the converter would have: the MLIR quantizer
   (``mlir_quantize``) for int8, with ``denylisted_nodes`` for ``float_nodes`` (what
   ``tf.lite.experimental.QuantizationDebugger``'s ``get_nondebug_quantized_model`` does); for
   16x8 TFLite's older quantizer (the one the converter uses for 16x8: the MLIR quantizer leaves
   int32 biases LiteRT's int16 depthwise kernel rejects), fed no samples so that it keeps the
   edited min/max. The rest of ``convert()`` (I/O types, buffer deduplication, metadata) is
   unchanged; with unedited statistics this path gives the converter's bytes exactly.

16x8 limits of TensorFlow 2.19, reported as one-line errors: its 16x8 quantizer has no int16
PRELU (face_landmark), and with per-tensor weights it fails on every depthwise convolution (all
MediaPipe models), so 16x8 needs ``per_channel`` there; a model that converts but that LiteRT
cannot prepare or run names the operators without int16 kernels.

A ``float_nodes`` entry (an ONNX node name) is found in TFLite as the operator whose constant
inputs hold the node's weights (same values, in TFLite's layout); that operator's output tensor
name is what the MLIR quantizer's denylist takes. TFLite's 16x8 quantizer has no denylist, so
``float_nodes`` with ``activation_bits: 16`` is an error for TFLite (onnxruntime supports it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_bytes
from pipeline.calibration.reader import iter_inputs
from pipeline.convert.runners import onnx_input_layout
from pipeline.errors import PosezooError
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.preprocess import preprocess_onnx
from pipeline.quantize.ranges import (
    RangeCollector,
    RangeTable,
    chunks,
    ranges_of_preprocessed,
)
from pipeline.quantize.tflite_match import match_to_onnx, tflite_tensor_values
from pipeline.registry import InputSpec
from pipeline.threads import tensorflow

log = logging.getLogger(__name__)

_FLOAT32 = 0  # tflite TensorType.FLOAT32


@dataclass
class TfliteReport:
    """What the TFLite exporter did beyond the converter's defaults."""

    #: activation tensors carrying calibration statistics
    tensors: int = 0
    #: of which took the range of an ONNX tensor (shared ranges)
    mapped: int = 0
    #: TFLite names of those ranged on the TFLite float graph (no ONNX counterpart)
    unmapped: list[str] = field(default_factory=list)
    #: ONNX node name -> TFLite operator output tensor kept in float
    float_layers: dict[str, str] = field(default_factory=dict)


def quantize_tflite(
    saved_model: Path,
    dest: Path,
    manifest: Path,
    spec: InputSpec,
    config: QuantConfig,
    float_onnx: Path | None = None,
    ranges: RangeTable | None = None,
) -> TfliteReport:
    """Write an integer TFLite of ``saved_model`` quantized per ``config`` to ``dest`` (atomic).

    ``float_onnx`` (the ONNX the SavedModel was converted from) is needed for shared ranges
    (any calibration but ``minmax``) and for ``float_nodes``; ``ranges`` skips recomputing them.
    """
    tf = tensorflow()

    if (config.shared_ranges or config.float_nodes) and float_onnx is None:
        raise PosezooError(f"{saved_model}: shared activation ranges (any calibration but minmax) and float_nodes need the float ONNX; pass float_onnx (build/float/<model>/model.onnx)")
    if config.float_nodes and config.activation_bits == 16:
        raise PosezooError(f"{saved_model}: TFLite's 16x8 quantizer cannot keep layers in float; use float_nodes with activation_bits 8, or no float_nodes")
    if ranges is not None and config.shared_ranges and not ranges.fits(config):
        raise PosezooError(f"{saved_model}: the range table was computed for {ranges.calibration}, not {config.calibration}; recompute it with this config")

    def representative_dataset():  # type: ignore[no-untyped-def]
        for _, x in iter_inputs(manifest, spec, "NHWC"):
            yield [x]

    io_type = tf.int16 if config.activation_bits == 16 else tf.int8
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    if config.activation_bits == 16:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    converter._experimental_disable_per_channel = not config.per_channel
    report = TfliteReport()
    with tempfile.TemporaryDirectory(prefix="posezoo-tflite-") as tmp:
        if config.shared_ranges or config.float_nodes:
            pre = Path(tmp) / "pre.onnx"
            preprocess_onnx(Path(float_onnx), pre)  # type: ignore[arg-type]
            if config.shared_ranges and ranges is None:
                ranges = ranges_of_preprocessed(pre, manifest, spec, config, onnx_input_layout(Path(float_onnx)))  # type: ignore[arg-type]
            _split_quantization(converter, lambda calibrated: _edit(calibrated, pre, Path(float_onnx), manifest, spec, config, ranges, report))  # type: ignore[arg-type]
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                flatbuffer = converter.convert()
        except PosezooError:
            raise
        except _EditFailed as err:  # posezoo's own step inside the converter: not a converter error
            raise err.__cause__ from None  # type: ignore[misc]
        except Exception as err:  # the converter raises ConverterError / RuntimeError with MLIR dumps
            raise _converter_error(saved_model, err, config) from err
    if config.activation_bits == 16:
        _check_runs(saved_model, flatbuffer)
    write_bytes(dest, flatbuffer)
    if config.shared_ranges:
        log.info("%s: %d of %d TFLite activation tensors took the shared ONNX %s ranges; %d ranged on the TFLite graph%s",
                 dest.name, report.mapped, report.tensors, config.calibration, len(report.unmapped),
                 f" ({', '.join(report.unmapped)})" if report.unmapped else "")
    log.info("wrote %s (%d bytes, %s, %s, %s, %d float layers)", dest, len(flatbuffer), "per-channel" if config.per_channel else "per-tensor",
             config.calibration, "16x8" if config.activation_bits == 16 else "int8", len(report.float_layers))
    return report


def _converter_error(saved_model: Path, err: Exception, config: QuantConfig) -> PosezooError:
    text = str(err)
    unsupported = sorted(set(re.findall(r"not yet supported for op: '(\w+)'", text)))
    if unsupported and config.activation_bits == 16:
        return PosezooError(f"{saved_model}: TFLite has no 16x8 (int16 activation) quantization for {', '.join(unsupported)}; use activation_bits 8 for this model")
    if config.activation_bits == 16 and not config.per_channel and "Quantized dimension for tensor property" in text:
        # TensorFlow's (pre-MLIR) quantizer, the one 16x8 uses, keeps the depthwise kernel's
        # per-channel axis 3 while writing one per-tensor scale (reported as onnx2tf#684, ultralytics#9561).
        return PosezooError(f"{saved_model}: TFLite's 16x8 quantizer cannot quantize depthwise-conv weights per-tensor (TensorFlow bug: quantized dimension 3 with one scale); use per_channel with activation_bits 16")
    lines = text.splitlines()
    first = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
    kind = "16x8" if config.activation_bits == 16 else "full-int8"
    return PosezooError(f"{saved_model}: TFLiteConverter cannot make a {kind} model ({first.strip()}); an op has no integer kernel")


def _check_runs(saved_model: Path, flatbuffer: bytes) -> None:
    """LiteRT must prepare and run a 16x8 model (some ops have int16 quantization but no kernel)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=bytes(flatbuffer), num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except (RuntimeError, ValueError) as err:
        ops = sorted(set(re.findall(r"\(([A-Z0-9_]+)\) failed to (?:prepare|invoke)", str(err))))
        what = f"no int16 kernel for {', '.join(ops)}" if ops else str(err).splitlines()[0]
        raise PosezooError(f"{saved_model}: LiteRT cannot run the 16x8 model ({what}); use activation_bits 8 for this model") from err


class _EditFailed(Exception):
    """An exception of posezoo's edit step, carried through the converter as ``__cause__``."""


def _split_quantization(converter: Any, edit: Any) -> None:
    """Make ``converter.convert()`` calibrate, apply ``edit(calibrated) -> (bytes, denylist)``, then quantize.

    Replaces the converter instance's ``_quantize`` step (TensorFlow 2.19's
    ``TFLiteConverterBase._quantize``) with: the original step in calibrate-only mode, ``edit``,
    and the quantizer the original would have run on the calibrated model.
    """
    import tensorflow as tf
    from tensorflow.lite.python import lite as tf_lite
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    original = converter._quantize

    def quantize(result, input_type, output_type, activations_type, bias_type, allow_float, enable_variable_quantization, debug_options):  # type: ignore[no-untyped-def]
        converter._experimental_calibrate_only = True
        try:
            calibrated = original(result, input_type, output_type, activations_type, bias_type, allow_float, enable_variable_quantization, debug_options)
        finally:
            converter._experimental_calibrate_only = False
        try:
            calibrated, denylist = edit(calibrated)
        except PosezooError:
            raise
        except Exception as err:
            raise _EditFailed() from err
        if activations_type == tf.int16:
            # calibrate_and_quantize without its calibration: no samples fed, so QuantizeModel
            # keeps the statistics stored in the (edited) model.
            wrapper = tf_calibrator.Calibrator(calibrated)._calibrator
            return wrapper.QuantizeModel(
                np.dtype(input_type.as_numpy_dtype()).num,
                np.dtype(output_type.as_numpy_dtype()).num,
                allow_float,
                np.dtype(activations_type.as_numpy_dtype()).num,
                np.dtype(bias_type.as_numpy_dtype()).num,
                converter._experimental_disable_per_channel,
                converter._experimental_disable_per_channel_quantization_for_dense_layers,
            )
        return tf_lite._mlir_quantize(
            calibrated,
            converter._experimental_disable_per_channel,
            input_data_type=input_type,
            output_data_type=output_type,
            enable_variable_quantization=enable_variable_quantization,
            disable_per_channel_for_dense_layers=converter._experimental_disable_per_channel_quantization_for_dense_layers,
            debug_options_str=debug_options.SerializeToString(),
            denylisted_nodes=denylist or None,
        )

    converter._quantize = quantize


def _statistic_tensors(model: Any) -> list[int]:
    """Indices of subgraph 0's float activation tensors that carry a calibrated min/max."""
    graph = model.subgraphs[0]
    found = []
    for index, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        constant = tensor.buffer and model.buffers[tensor.buffer].data is not None and len(model.buffers[tensor.buffer].data)
        if tensor.type == _FLOAT32 and not constant and q is not None and q.min is not None and len(q.min) == 1 and q.max is not None and len(q.max) == 1:
            found.append(index)
    return found


def _edit(calibrated: bytes, pre: Path, float_onnx: Path, manifest: Path, spec: InputSpec, config: QuantConfig, table: RangeTable | None,
          report: TfliteReport) -> tuple[bytes, list[str]]:
    """Impose the shared ranges on a calibrated flatbuffer and name the float layers' tensors."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    if table is not None:
        indices = _statistic_tensors(model)
        report.tensors = len(indices)
        matches = match_to_onnx(calibrated, indices, pre, table.ranges, manifest, spec, onnx_input_layout(float_onnx))
        report.mapped = len(matches)
        chosen = {i: table.ranges[name] for i, name in matches.items()}
        unmapped = [i for i in indices if i not in matches]
        report.unmapped = [_name(graph.tensors[i]) for i in unmapped]
        if unmapped:
            collector = RangeCollector(config.calibration, config.percentile, config.activation_bits)
            for chunk in chunks(manifest, spec, "NHWC"):
                values = tflite_tensor_values(calibrated, unmapped, chunk)
                collector.collect({str(i): v for i, v in values.items()})
            chosen.update({int(k): v for k, v in collector.ranges().items()})
        for i, (lo, hi) in chosen.items():
            graph.tensors[i].quantization.min = np.array([lo], dtype=np.float32)
            graph.tensors[i].quantization.max = np.array([hi], dtype=np.float32)
    denylist = []
    if config.float_nodes:
        layers = _layer_tensors(model, pre, float_onnx, config.float_nodes)
        report.float_layers = layers
        denylist = [layers[n] for n in config.float_nodes]
    if table is None:
        return calibrated, denylist
    return flatbuffer_utils.convert_object_to_bytearray(model), denylist


def _name(tensor: Any) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _sorted_constant(model: Any, index: int) -> np.ndarray | None:
    if index < 0:
        return None
    tensor = model.subgraphs[0].tensors[index]
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if tensor.type != _FLOAT32 or data is None or len(data) < 8:
        return None
    return np.sort(np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=np.float32))


def _layer_tensors(model: Any, pre: Path, float_onnx: Path, nodes: tuple[str, ...]) -> dict[str, str]:
    """ONNX node name -> output tensor name of the TFLite operator holding the same weights."""
    import onnx
    from onnx import numpy_helper

    onnx_graph = onnx.load(str(pre)).graph
    initializers = {i.name: i for i in onnx_graph.initializer}
    by_name = {n.name: n for n in onnx_graph.node}
    operators = []
    for op in model.subgraphs[0].operators:
        weights = [w for w in (_sorted_constant(model, i) for i in op.inputs) if w is not None]
        if weights and len(op.outputs):
            operators.append((_name(model.subgraphs[0].tensors[op.outputs[0]]), weights))
    found = {}
    for node_name in nodes:
        node = by_name.get(node_name)
        if node is None:
            raise PosezooError(f"{float_onnx}: float_nodes entry {node_name} is not a node of this model; pick names from quantizable_layers()")
        weights = [np.sort(numpy_helper.to_array(initializers[i]).astype(np.float32), axis=None) for i in node.input[1:2] if i in initializers]
        if not weights:
            raise PosezooError(f"{float_onnx}: float_nodes entry {node_name} ({node.op_type}) has no constant weights to find it by in TFLite; keep only weighted layers in float")
        hits = [name for name, consts in operators if any(c.size == weights[0].size and np.allclose(c, weights[0], rtol=1e-6, atol=0) for c in consts)]
        if len(hits) != 1:
            raise PosezooError(f"{float_onnx}: float_nodes entry {node_name} matches {len(hits)} TFLite operators by weights, not one; it cannot be kept in float in TFLite")
        found[node_name] = hits[0]
    return found
