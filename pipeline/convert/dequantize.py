"""Int8 TFLite → float ONNX by dequantizing it: a published int8 release as a source.

Some models are published only as int8 files (ST's YOLOv8n-pose, TF Hub's MoveNet int8), each
with one weight granularity. Dequantizing gives a float model whose weights are exactly the int8
weights times their scales; the normal per-channel / per-tensor exports then run on it, e.g. a
per-tensor model for an NPU that needs one, made from a per-channel release.

tf2onnx's ``--dequantize`` mode does the graph work (weights become float initializers, the
quantize/dequantize pairs between layers are dropped, see
:func:`pipeline.convert.tflite_to_onnx.convert_tflite`). It keeps the integer model input and its
dequantization (Cast → Sub(zero point) → Mul(scale)); that chain is replaced by a float input
(:func:`pipeline.convert.tflite_to_onnx.float_input`) that carries the real values directly, so
the float model takes what the int8 input represents: [0, 1] for ST's uint8 with scale 1/255,
plain pixel values 0–255 for MoveNet's uint8 without quantization parameters. Likewise an integer output's final QuantizeLinear is dropped, so every
output is the real value. :class:`DequantizeInfo` reports that range for the registry's
``input.range`` and the output quantization steps, the unit in which the float model's distance
from the int8 original (the int8 activation error) is judged.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pipeline.calibration.reader import iter_inputs
from pipeline.convert.runners import runner_for
from pipeline.convert.tflite_to_onnx import check_tflite, convert_tflite, float_input
from pipeline.convert.verify import Criterion, compare_outputs
from pipeline.errors import PosezooError
from pipeline.onnx_graph import OnnxGraph, remove_unused_initializers
from pipeline.registry import InputSpec

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DequantizeInfo:
    """What the int8 file implies for its float version.

    ``input_range`` is the real-valued range the int8 input can represent (None for a float
    input read by no QUANTIZE op); ``output_steps`` is the quantization step of each output in
    source order (the scale of an integer output, or of the tensor a final DEQUANTIZE reads;
    None for an output computed in float).
    """

    input_name: str
    input_dtype: str
    input_scale: float | None
    input_zero_point: int | None
    input_range: tuple[float, float] | None
    output_steps: tuple[float | None, ...]


_QUANTIZED_TYPES = ("INT8", "UINT8", "INT16", "INT4")
# ONNX element types that only a leftover quantized tensor would have (int32/int64 casts remain
# legitimately: MoveNet's ArgMax → GatherND index arithmetic).
_QUANTIZED_ONNX = ("INT8", "UINT8", "INT16", "UINT16", "INT4", "UINT4")
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def _quant(tensor: object) -> tuple[np.ndarray, np.ndarray] | None:
    """(scales, zero points) of a flatbuffer tensor, or None when it has no quantization."""
    q = tensor.Quantization()  # type: ignore[attr-defined]
    if q is None or q.ScaleIsNone() or q.ScaleLength() == 0:
        return None
    return q.ScaleAsNumpy(), (q.ZeroPointAsNumpy() if not q.ZeroPointIsNone() else np.zeros(q.ScaleLength(), np.int64))


def _real_range(dtype: str, quant: tuple[np.ndarray, np.ndarray] | None) -> tuple[float, float]:
    info = np.iinfo(dtype.lower())
    if quant is None:
        return float(info.min), float(info.max)
    scale, zero = float(quant[0][0]), int(quant[1][0])
    return float((info.min - zero) * scale), float((info.max - zero) * scale)


def read_quantization(src: Path) -> DequantizeInfo:
    """The int8 input/output facts of ``src``; fails unless it holds quantized int8 tensors."""
    import tflite

    names = check_tflite(src)
    if len(names) != 1:
        raise PosezooError(f"{src}: has {len(names)} inputs; posezoo models take one image input")
    model = tflite.Model.GetRootAsModel(Path(src).read_bytes(), 0)
    graph = model.Subgraphs(0)
    type_name = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    if not any(type_name[t.Type()] in _QUANTIZED_TYPES and _quant(t) is not None for t in tensors):
        raise PosezooError(f"{src}: has no quantized int8 tensors, so there is nothing to dequantize; convert it as a float TFLite (source format tflite)")
    code_name = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]

    def op_name(op: object) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())  # type: ignore[attr-defined]
        return code_name[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]

    index = graph.Inputs(0)
    inp = tensors[index]
    in_type = type_name[inp.Type()]
    in_quant = _quant(inp)
    if in_quant is not None and len(in_quant[0]) != 1:
        raise PosezooError(f"{src}: the input is quantized per axis; only one input scale is supported")
    if in_type in _QUANTIZED_TYPES:
        in_range: tuple[float, float] | None = _real_range(in_type, in_quant)
    else:  # a float input: the range is what the first QUANTIZE reading it can represent
        first = next((op for op in ops if op_name(op) == "QUANTIZE" and op.Inputs(0) == index), None)
        out = tensors[first.Outputs(0)] if first is not None else None
        in_range = _real_range(type_name[out.Type()], _quant(out)) if out is not None and _quant(out) is not None else None

    steps: list[float | None] = []
    for i in range(graph.OutputsLength()):
        out_index = graph.Outputs(i)
        quant = _quant(tensors[out_index])
        if quant is None:  # float output: quantized if a final DEQUANTIZE produces it
            producer = next((op for op in ops if out_index in op.OutputsAsNumpy()), None)
            if producer is not None and op_name(producer) == "DEQUANTIZE":
                quant = _quant(tensors[producer.Inputs(0)])
        steps.append(float(np.max(quant[0])) if quant is not None else None)
    return DequantizeInfo(
        input_name=names[0],
        input_dtype=in_type.lower(),
        input_scale=float(in_quant[0][0]) if in_quant is not None else None,
        input_zero_point=int(in_quant[1][0]) if in_quant is not None else None,
        input_range=in_range,
        output_steps=tuple(steps),
    )


def _float_outputs(model: onnx.ModelProto) -> None:
    """Replace the QuantizeLinear that makes an integer model output by an Identity: the float output.

    tf2onnx keeps the final TFLite QUANTIZE of an integer output; the float value it reads is the
    real value the integer output encodes (before rounding), which is what the float model gives.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    index = OnnxGraph(graph)
    for output in graph.output:
        node = index.producer_node(output.name)
        if node is not None and node.op_type == "QuantizeLinear":
            identity = helper.make_node("Identity", [node.input[0]], [output.name])
            graph.node.insert(list(graph.node).index(node), identity)
            graph.node.remove(node)
            output.type.tensor_type.elem_type = TensorProto.FLOAT


def _check_dequantized(model: onnx.ModelProto, src: Path, by: str = "tf2onnx") -> None:
    """Fail if any quantized op, cast or tensor survived: the float model must be float end to end.

    ``by`` names what dequantized the model in the error (tf2onnx here; the QDQ folding of
    :mod:`pipeline.convert.dequantize_qdq`).
    """
    from onnx import TensorProto, helper

    graph = model.graph
    quantized = {getattr(TensorProto, t) for t in _QUANTIZED_ONNX}
    left = sorted({n.op_type for n in graph.node if n.op_type in _QUANTIZED_OPS})
    left += [f"Cast to {TensorProto.DataType.Name(helper.get_attribute_value(n.attribute[0]))}" for n in graph.node if n.op_type == "Cast" and helper.get_attribute_value(n.attribute[0]) in quantized]
    left += [f"{TensorProto.DataType.Name(v.data_type)} initializer" for v in graph.initializer if v.data_type in quantized]
    left += [f"{TensorProto.DataType.Name(v.type.tensor_type.elem_type)} {v.name}" for v in [*graph.input, *graph.output] if v.type.tensor_type.elem_type in quantized]
    if left:
        raise PosezooError(f"{src}: the dequantized ONNX still holds quantized parts ({'; '.join(sorted(set(left)))}); {by} could not dequantize the model")


def dequantize_tflite_to_onnx(src: Path, dest: Path, opset: int) -> DequantizeInfo:
    """Convert the int8 TFLite ``src`` to a float ONNX ``dest`` (atomic, NCHW input, canonical names).

    The ONNX takes the real-valued input (``DequantizeInfo.input_range``) and gives float
    outputs; it contains no quantize, dequantize or cast-to-int8 node.
    """
    src = Path(src)
    info = read_quantization(src)

    def rewrite(model: onnx.ModelProto) -> None:
        if info.input_dtype.upper() in _QUANTIZED_TYPES:
            float_input(model, src, info.input_scale, info.input_zero_point)
        _float_outputs(model)
        remove_unused_initializers(model.graph)
        _check_dequantized(model, src)

    convert_tflite(src, dest, opset, dequantize=True, rewrite=rewrite)
    log.info("dequantized %s: real input range %s, output steps %s", src.name, info.input_range, info.output_steps)
    return info


def verify_dequantized(
    reference: Path,
    candidate: Path,
    manifest: Path,
    spec: InputSpec,
    info: DequantizeInfo,
    mean_steps: float,
    max_samples: int,
) -> dict[str, Any]:
    """Compare the float ``candidate`` with the int8 ``reference`` on real crops; raise if too far apart.

    Returns the sample count and, per output, the step, max / mean absolute difference (also in
    steps) and whether it passed.

    The two differ by the int8 activation error, which is not small and not bounded: the worst
    element is 130–180 output steps on both reference models (an anchor score or an ArgMax
    keypoint that flips), and the int8 file itself differs that much between LiteRT's XNNPACK and
    built-in kernels. So the maximum is reported but not judged; the judged figure is the mean
    absolute difference over all values and samples, which must stay within ``mean_steps``
    output quantization steps. An output computed in float has no step; it is judged in the step an
    8-bit output calibrated on these samples would have (reference range, widened to include 0 as
    TFLite's quantizer does, / 255).
    ``spec.value_range`` must be the real-valued input range the int8 file implies.
    """
    if info.input_range is not None and not np.allclose(spec.value_range, info.input_range, rtol=1e-3, atol=1e-3):
        lo, hi = info.input_range
        raise PosezooError(
            f"{reference}: its int8 input represents values in [{lo:.6g}, {hi:.6g}] but the input spec's range is "
            f"{list(spec.value_range)}; set the registry's input.range to [{lo:.6g}, {hi:.6g}]"
        )
    ref_run = runner_for(reference, source_order=True)
    cand_run = runner_for(candidate)
    samples = itertools.islice(iter_inputs(manifest, spec, "NHWC"), max_samples)
    count, outputs = compare_outputs(samples, ref_run, cand_run, MeanSteps(reference, candidate, info.output_steps, mean_steps))
    if not count:
        raise PosezooError(f"{manifest}: has no samples to verify {candidate} with; run `posezoo calibrate`")
    return {"samples": count, "outputs": outputs}  # no paths: a stage writes this report from a temporary directory


class MeanSteps(Criterion):
    """Each output's mean |diff| over all values and samples within ``mean_steps`` output steps (:func:`verify_dequantized`).

    An output computed in float (no step in ``steps``) is judged in the step an 8-bit output
    calibrated on these samples would have.
    """

    def __init__(self, reference: Path, candidate: Path, steps: tuple[float | None, ...], mean_steps: float) -> None:
        super().__init__(reference, candidate)
        self.steps, self.mean_steps = steps, mean_steps

    def mismatch(self, ref_out: Sequence[np.ndarray], cand_out: Sequence[np.ndarray]) -> str | None:
        if len(cand_out) != len(ref_out) or any(r.size != c.size for r, c in zip(ref_out, cand_out)):
            return f"{self.candidate}: output sizes {[c.size for c in cand_out]} differ from {self.reference}'s {[r.size for r in ref_out]}; the conversion is broken"
        return None

    def start(self, index: int, reference: np.ndarray) -> dict[str, Any]:
        return {"index": index, "diffs": [], "refs": []}

    def add(self, state: dict[str, Any], sample: Any, reference: np.ndarray, candidate: np.ndarray) -> None:
        state["diffs"].append(np.abs(reference.ravel() - candidate.ravel()))
        state["refs"].append(reference.ravel())

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        i, step = state["index"], self.steps[state["index"]]
        diff, ref = np.concatenate(state["diffs"]), np.concatenate(state["refs"])
        unit = step if step is not None else (max(float(ref.max()), 0.0) - min(float(ref.min()), 0.0)) / 255 or 1.0
        max_steps, mean_steps = float(diff.max()) / unit, float(diff.mean()) / unit
        log.info("%s output %d: mean |diff| %.3g steps (max %.3g, tolerance %.3g)", Path(self.candidate).name, i, mean_steps, max_steps, self.mean_steps)
        return {
            "index": i,
            "step": unit,
            "step_from": "int8 output" if step is not None else "reference range with 0 / 255",
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "max_steps": max_steps,
            "mean_steps": mean_steps,
            "tolerance_mean_steps": self.mean_steps,
            "ok": mean_steps <= self.mean_steps,
        }

    def failure(self, entry: dict[str, Any]) -> str:
        return (
            f"{self.candidate}: output {entry['index']} differs from the int8 {self.reference} by {entry['mean_steps']:.3g} output steps on average "
            f"(tolerance {self.mean_steps:g} steps, step {entry['step']:.4g}); the dequantized model is not the int8 model — check the input range "
            "and colour order, or set models.<name>.dequantized_mean_steps in params.yaml if the difference is expected"
        )
