"""Full-integer int8 TFLite export with TFLiteConverter.

int8 weights and activations, int8 input and output tensors (what MCU/NPU runtimes want), the
representative dataset read from the calibration manifest. Per-tensor weights use the
converter's ``_experimental_disable_per_channel`` switch — the only knob TFLite exposes for it.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from pipeline.atomic import write_bytes
from pipeline.calibration.reader import iter_inputs
from pipeline.errors import PosezooError
from pipeline.registry import InputSpec

log = logging.getLogger(__name__)


def quantize_tflite(saved_model: Path, dest: Path, manifest: Path, spec: InputSpec, per_channel: bool) -> None:
    """Write an int8 TFLite of ``saved_model`` calibrated on ``manifest`` to ``dest`` (atomic)."""
    import tensorflow as tf

    def representative_dataset():  # type: ignore[no-untyped-def]
        for _, x in iter_inputs(manifest, spec, "NHWC"):
            yield [x]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = not per_channel
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            flatbuffer = converter.convert()
    except Exception as err:  # the converter raises ConverterError / RuntimeError with MLIR dumps
        first = next((line for line in str(err).splitlines() if "error" in line.lower()), str(err).splitlines()[0] if str(err) else "")
        raise PosezooError(f"{saved_model}: TFLiteConverter cannot make a full-int8 model ({first.strip()}); an op has no int8 kernel") from err
    write_bytes(dest, flatbuffer)
    log.info("wrote %s (%d bytes, %s)", dest, len(flatbuffer), "per-channel" if per_channel else "per-tensor")
