"""Float TFLite → float ONNX with tf2onnx.

tf2onnx reads the flatbuffer directly (fp16 weights behind DEQUANTIZE become fp32 initializers).
The ONNX input is made NCHW (``inputs_as_nchw``): that is the layout onnx2tf expects when it
turns the ONNX into an NHWC SavedModel, and the conventional layout for ONNX consumers. Names are
canonicalized (:mod:`pipeline.convert.canonical`) so the output is byte-for-byte reproducible.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from pipeline.atomic import atomic_path
from pipeline.convert.canonical import canonicalize
from pipeline.errors import PosezooError

log = logging.getLogger(__name__)

TFLITE_MAGIC = b"TFL3"


def check_tflite(path: Path) -> list[str]:
    """Input names of ``path``; fails with a clear message unless it is a loadable TFLite flatbuffer."""
    data = Path(path).read_bytes()[:8]
    if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
        raise PosezooError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); check the source entry in the registry")
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise PosezooError(f"{path}: truncated or corrupt TFLite file ({str(err).splitlines()[0]}); fetch it again") from err
    return [d["name"] for d in interpreter.get_input_details()]


def _unsupported_ops(log_text: str) -> list[str]:
    ops = []
    for line in log_text.splitlines():
        if "Unsupported ops" in line or "is not supported" in line:
            ops.append(line.split("ERROR")[-1].strip(" -:"))
    return ops


def tflite_to_onnx(src: Path, dest: Path, opset: int) -> None:
    """Convert ``src`` to ``dest`` (atomic); unsupported TFLite ops are named in the error."""
    import onnx
    import tf2onnx

    input_names = check_tflite(src)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    tf2onnx_log = logging.getLogger("tf2onnx")
    tf2onnx_log.addHandler(handler)
    try:
        with atomic_path(dest) as tmp, contextlib.redirect_stdout(io.StringIO()):
            model, _ = tf2onnx.convert.from_tflite(str(src), opset=opset, inputs_as_nchw=input_names)
            _check_converted(captured.getvalue(), src)
            model = canonicalize(model)
            onnx.checker.check_model(model)
            onnx.save(model, str(tmp))
    except PosezooError:
        raise
    except Exception as err:  # tf2onnx raises bare exceptions for unsupported graphs
        ops = _unsupported_ops(captured.getvalue())
        detail = "; ".join(ops) if ops else f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise PosezooError(f"{src}: tf2onnx cannot convert it ({detail}); the model uses ops tf2onnx (opset {opset}) does not support") from err
    finally:
        tf2onnx_log.removeHandler(handler)
    log.info("converted %s -> %s (opset %d)", src.name, dest, opset)


def _check_converted(log_text: str, src: Path) -> None:
    ops = _unsupported_ops(log_text)
    if ops:
        raise PosezooError(f"{src}: tf2onnx left unsupported ops ({'; '.join(ops)}); the model cannot be converted to ONNX")

