"""ONNX QDQ export with onnxruntime.quantization.

``quant_pre_process`` (symbolic shape inference + graph optimisation, needs sympy) runs first, as
onnxruntime recommends, then the QDQ quantizer with int8 weights (per-channel or per-tensor) and
int8 or int16 activations:

- ``calibration: minmax`` runs ``quantize_static`` with its MinMax calibration on the manifest —
  with the default config exactly the original export, byte for byte.
- Any other calibration takes the activation ranges of :func:`pipeline.quantize.ranges.compute_ranges`
  (the table the TFLite exporter imposes too) and hands them to onnxruntime's ``QDQQuantizer`` as
  its ``TensorsData``, which is what ``quantize_static`` does with its own calibrator's output
  (``quantize_static`` itself cannot take precomputed ranges; ``TensorQuantOverrides`` ``rmin``/
  ``rmax`` would bypass the Relu/Clip range adjustment the quantizer applies to calibrator ranges).
- ``activation_bits: 16``: ``QInt16`` activations, symmetric (``ActivationSymmetric``, zero point
  0, as in TFLite's 16x8 mode). Before opset 21 ONNX has no 16-bit QuantizeLinear, so the Q/DQ
  nodes are onnxruntime's ``com.microsoft`` ones (``UseQDQContribOps``): the file runs on
  onnxruntime, not on every ONNX runtime.
- ``float_nodes``: ``nodes_to_exclude`` (the nodes stay float between DequantizeLinear and
  QuantizeLinear).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_path
from pipeline.calibration.reader import ManifestReader
from pipeline.convert.runners import onnx_input_layout
from pipeline.errors import PosezooError
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.preprocess import op_types_to_quantize, preprocess_onnx
from pipeline.quantize.ranges import RangeTable, pinned_calibrators, ranges_of_preprocessed
from pipeline.registry import InputSpec

log = logging.getLogger(__name__)


def _options(config: QuantConfig) -> tuple[Any, dict[str, Any]]:
    """(activation QuantType, extra_options) of a config."""
    from onnxruntime.quantization import QuantType

    if config.activation_bits == 16:
        return QuantType.QInt16, {"ActivationSymmetric": True, "UseQDQContribOps": True}
    return QuantType.QInt8, {}


def _check_nodes(pre: Path, float_onnx: Path, config: QuantConfig) -> None:
    import onnx

    names = {n.name for n in onnx.load(str(pre), load_external_data=False).graph.node}
    missing = [n for n in config.float_nodes if n not in names]
    if missing:
        raise PosezooError(f"{float_onnx}: float_nodes {', '.join(missing)}: no such node in this model; pick names from quantizable_layers()")


def quantize_onnx(float_onnx: Path, dest: Path, manifest: Path, spec: InputSpec, config: QuantConfig, ranges: RangeTable | None = None) -> None:
    """Write a QDQ ONNX of ``float_onnx`` quantized per ``config`` to ``dest`` (atomic).

    ``ranges`` (from :func:`~pipeline.quantize.ranges.compute_ranges` with the same config) skips
    recomputing the activation ranges; it is ignored for ``minmax``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if ranges is not None and config.shared_ranges and not ranges.fits(config):
        raise PosezooError(f"{float_onnx}: the range table was computed for {ranges.calibration}, not {config.calibration}; recompute it with this config")
    activation_type, extra_options = _options(config)
    input_name = onnx.load(str(float_onnx), load_external_data=False).graph.input[0].name
    layout = onnx_input_layout(Path(float_onnx))
    with atomic_path(dest) as tmp:
        pre = tmp.with_name(tmp.name + ".pre.onnx")
        try:
            preprocess_onnx(Path(float_onnx), pre)
            _check_nodes(pre, Path(float_onnx), config)
            if not config.shared_ranges:
                with pinned_calibrators():
                    quantize_static(
                        str(pre),
                        str(tmp),
                        ManifestReader(manifest, spec, input_name, layout),
                        quant_format=QuantFormat.QDQ,
                        per_channel=config.per_channel,
                        activation_type=activation_type,
                        weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(config.float_nodes),
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options=extra_options,
                    )
            else:
                table = ranges if ranges is not None else ranges_of_preprocessed(pre, manifest, spec, config, layout)
                _quantize_with_ranges(pre, tmp, table, config, activation_type, extra_options)
        except PosezooError:
            raise
        except Exception as err:  # onnxruntime's quantizer raises plain exceptions
            first = str(err).splitlines()[0] if str(err) else ""
            raise PosezooError(f"{float_onnx}: onnxruntime quantization failed ({type(err).__name__}: {first}); check the float model") from err
        finally:
            pre.unlink(missing_ok=True)
    log.info("wrote %s (%s, %s, %d-bit activations, %d float nodes)", dest, "per-channel" if config.per_channel else "per-tensor",
             config.calibration, config.activation_bits, len(config.float_nodes))


def _quantize_with_ranges(pre: Path, dest: Path, table: RangeTable, config: QuantConfig, activation_type: Any, extra_options: dict[str, Any]) -> None:
    """``quantize_static`` after its calibration step, with ``table`` as the calibrator's output."""
    import numpy as np
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
    from onnxruntime.quantization.quantize import check_static_quant_arguments

    model = load_model_with_shape_infer(pre)
    missing = sorted(_calibrated_tensors(model) - set(table.ranges))
    if missing:
        raise PosezooError(f"{pre}: the range table has no range for {len(missing)} tensors (e.g. {missing[0]}); it was computed on another model")
    method = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}.get(config.calibration, CalibrationMethod.MinMax)
    tensors_range = TensorsData(method, {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for name, (lo, hi) in table.ranges.items()})
    check_static_quant_arguments(QuantFormat.QDQ, activation_type, QuantType.QInt8)
    quantizer = QDQQuantizer(
        model,
        config.per_channel,
        False,  # reduce_range
        QuantType.QInt8,
        activation_type,
        tensors_range,
        [],  # nodes_to_quantize: all
        list(config.float_nodes),
        op_types_to_quantize(),
        extra_options,
    )
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(dest), False)


def _calibrated_tensors(model: Any) -> set[str]:
    """Tensors onnxruntime's calibrators calibrate: float non-initializer inputs/outputs of quantized op types."""
    from onnx import TensorProto

    infos = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    initializers = {i.name for i in model.graph.initializer}
    op_types = set(op_types_to_quantize())
    return {
        name
        for node in model.graph.node
        if node.op_type in op_types
        for name in list(node.input) + list(node.output)
        if name in infos and name not in initializers
        and infos[name].type.HasField("tensor_type") and infos[name].type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
    }
