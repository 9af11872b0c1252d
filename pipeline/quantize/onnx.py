"""ONNX QDQ int8 export with onnxruntime.quantization.

``quant_pre_process`` (symbolic shape inference + graph optimisation, needs sympy) runs first, as
onnxruntime recommends, then ``quantize_static`` in QDQ format with int8 activations and weights,
MinMax calibration on the manifest, per-channel or per-tensor weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.atomic import atomic_path
from pipeline.calibration.reader import ManifestReader
from pipeline.convert.runners import onnx_input_layout
from pipeline.errors import PosezooError
from pipeline.registry import InputSpec

log = logging.getLogger(__name__)


def quantize_onnx(float_onnx: Path, dest: Path, manifest: Path, spec: InputSpec, per_channel: bool) -> None:
    """Write a QDQ int8 ONNX of ``float_onnx`` calibrated on ``manifest`` to ``dest`` (atomic)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load(str(float_onnx), load_external_data=False).graph.input[0].name
    reader = ManifestReader(manifest, spec, input_name, onnx_input_layout(Path(float_onnx)))
    with atomic_path(dest) as tmp:
        pre = tmp.with_name(tmp.name + ".pre.onnx")
        try:
            quant_pre_process(str(float_onnx), str(pre), skip_symbolic_shape=False)
            quantize_static(
                str(pre),
                str(tmp),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except PosezooError:
            raise
        except Exception as err:  # onnxruntime's quantizer raises plain exceptions
            raise PosezooError(f"{float_onnx}: onnxruntime quantization failed ({type(err).__name__}: {str(err).splitlines()[0]}); check the float model") from err
        finally:
            pre.unlink(missing_ok=True)
    log.info("wrote %s (%s)", dest, "per-channel" if per_channel else "per-tensor")
