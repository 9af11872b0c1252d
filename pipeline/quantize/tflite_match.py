"""Which TFLite tensor holds which ONNX tensor's values: how shared ranges reach the TFLite export.

Shared activation ranges (:mod:`pipeline.quantize.ranges`) are keyed by tensor names of the
pre-processed float ONNX, but onnx2tf does not carry ONNX names into TensorFlow (its Keras layers
are auto-named ``tf.nn.convolution_3``, ``tf.math.add_7``... and the TFLite converter joins fused
ops' names). The TFLite exporter (:mod:`pipeline.quantize.tflite`) therefore maps its calibrated
tensors onto ONNX tensors by the values both compute on :data:`MATCH_SAMPLES` calibration inputs
(:func:`match_to_onnx`); only it uses this module.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from pipeline.calibration.reader import iter_inputs
from pipeline.convert.runners import ort_session
from pipeline.registry import InputSpec

#: Samples on which TFLite and ONNX tensors are matched by value.
MATCH_SAMPLES = 2
#: Two tensors match when their sorted values differ by at most this fraction of max |x|.
#: ORT and TFLite float kernels drift apart through the graph: on BlazePose's last layers a
#: tensor and its counterpart differ by up to 1.6e-3 (2.4e-3 with other ORT / LiteRT kernels),
#: while the closest other tensor is 1.5e-2 away (hand_landmark_full / _lite; 5e-2 on BlazePose).
#: The bound sits between the two with a 2-3x margin on each side: at 1e-3 it cut through the
#: drift, so which tensors matched depended on the float kernels' rounding, i.e. on the machine.
MATCH_RTOL = 5e-3


def tflite_tensor_values(calibrated: bytes, indices: list[int], inputs: list[np.ndarray]) -> dict[int, list[np.ndarray]]:
    """Values of tensors ``indices`` of a float TFLite flatbuffer on each input (reference kernels, no XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=bytes(calibrated),
        num_threads=1,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    (detail,) = interpreter.get_input_details()
    values: dict[int, list[np.ndarray]] = {i: [] for i in indices}
    for x in inputs:
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        for i in indices:
            values[i].append(np.array(interpreter.get_tensor(i), dtype=np.float32, copy=True))
    return values


def onnx_tensor_values(pre_onnx: Path, names: Iterable[str], inputs: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Values of float tensors ``names`` of an ONNX graph on each input (graph inputs included)."""
    import onnx

    model = onnx.load(str(pre_onnx))
    input_name = model.graph.input[0].name
    names = list(dict.fromkeys(names))
    wanted = [n for n in names if n != input_name]
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in wanted if n not in existing)
    session = ort_session(model.SerializeToString(), optimization="none")
    values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for x in inputs:
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {input_name: x})))
        for n in names:
            values[n].append(np.array(x if n == input_name else outputs[n], dtype=np.float32, copy=True))
    return values


def match_tensors(tflite_values: Mapping[Any, list[np.ndarray]], onnx_values: Mapping[str, list[np.ndarray]]) -> dict[Any, str]:
    """TFLite tensor -> ONNX tensor computing the same values, found by value.

    onnx2tf does not carry ONNX names into TensorFlow (its Keras layers are auto-named
    ``tf.nn.convolution_3``, ``tf.math.add_7``... and the TFLite converter joins fused ops' names),
    so tensors are matched by what they hold: on each of the sample inputs, the sorted values of
    both tensors (layout-free: NCHW and NHWC hold the same multiset) must agree within
    :data:`MATCH_RTOL` of max |x|. Several ONNX tensors can hold the same values (an Identity, a
    Flatten after a pooling): the closest, then the first in graph order, is taken — their
    ranges are equal on the calibration data. Unmatched TFLite tensors are left out.
    """
    by_size: dict[int, list[tuple[str, list[np.ndarray]]]] = {}
    for name, arrays in onnx_values.items():
        by_size.setdefault(arrays[0].size, []).append((name, [np.sort(a, axis=None) for a in arrays]))
    matches = {}
    for key, arrays in tflite_values.items():
        mine = [np.sort(np.asarray(a, dtype=np.float32), axis=None) for a in arrays]
        best, best_distance = None, np.inf
        for name, theirs in by_size.get(mine[0].size, []):
            distance = 0.0
            for a, b in zip(mine, theirs):
                scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-6)
                distance = max(distance, float(np.max(np.abs(a - b))) / scale if a.size else 0.0)
            if distance <= MATCH_RTOL and distance < best_distance:
                best, best_distance = name, distance
        if best is not None:
            matches[key] = best
    return matches


def match_to_onnx(calibrated: bytes, indices: list[int], pre_onnx: Path, names: Iterable[str], manifest: Path, spec: InputSpec, layout: str) -> dict[int, str]:
    """TFLite tensor index -> ONNX tensor of ``names`` computing the same values, on the first
    :data:`MATCH_SAMPLES` manifest inputs (fed NCHW to the ONNX when its ``layout`` is NCHW)."""
    samples = [x for _, x in itertools.islice(iter_inputs(manifest, spec, "NHWC"), MATCH_SAMPLES)]
    onnx_inputs = [np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "NCHW" else x for x in samples]
    return match_tensors(tflite_tensor_values(calibrated, indices, samples), onnx_tensor_values(pre_onnx, names, onnx_inputs))
