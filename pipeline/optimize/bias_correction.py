"""Empirical bias correction of the int8 weight error (Nagel et al. 2019 §4.2; cf. NNCF BiasCorrection).

Why: rounding a layer's weights does not merely add noise: on real inputs the error of output
channel ``c``, ``((Q(W) − W) ∗ x)_c``, has a nonzero mean, a systematic shift that the next
layers carry on (Nagel Fig. 3; per-tensor depthwise weights make it large). Subtracting its
expectation from the bias, ``b ← b − ε``, removes the shift (the error's variance remains).

The quantizer simulated is the exporters' own (:func:`pipeline.optimize.graph.fake_quantize`:
symmetric int8 in [-127, 127], per output channel or per tensor), applied to the weights of
every Conv (incl. grouped/depthwise), Gemm, and MatMul whose constant weights feed a bias Add.

The expectation is over calibration images and output positions. A convolution is linear in its
input, so the mean over images of ``conv(W, x_n)`` is ``conv(W, mean_n x_n)``: each layer's input
is averaged over images *per position* and convolved once, with the layer's own attributes, in
onnxruntime. That is exact at the borders too, where zero padding leaves the outer outputs
fewer inputs; convolving a per-channel mean input broadcast over space (NNCF's shortcut) is not.
Averaging the real outputs of a model carrying ``Q(W)`` gives the same number, but needs that
model per layer, whereas input means serve both weights from one pass (``sequential=False`` is
a single pass for all layers).

Sequential (default): layers are corrected in dependency rounds. A layer's input mean ``x̃`` is
measured on the model whose upstream layers already carry ``Q(W)`` and their corrected biases,
and ``ε = mean(conv(Q(W), x̃)) − mean(conv(W, x))`` with ``x`` from the float model: this also
cancels the mean shift that upstream errors still produce after passing a nonlinearity (ReLU6
clipping, PReLU), which no upstream bias can reach. ``sequential=False`` uses ``x̃ = x`` (one
pass; only each layer's own weight error). Not simulated: activation quantization (its rounding
is close to zero-mean and the calibration images set the clipping ranges, so they do not clip)
and the int32 bias rounding (step ``s_x · s_w``, negligible).

The written model is the float model with only biases changed; the exporters quantize its
weights exactly as simulated here, so the correction is meant for one granularity
(``per_channel``) and should feed only exports of that granularity.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.atomic import atomic_path
from pipeline.optimize.graph import (
    Graph,
    attribute,
    fake_quantize,
    load_inputs,
    mean_tensors,
    save_bytes,
    session,
)
from pipeline.registry import InputSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layer:
    """A weighted node whose bias can absorb its weight error."""

    node: int
    weight: str
    bias_at: tuple[int, int]  # (node, input index) where the bias enters: the layer itself, or a MatMul's Add
    axis: int  # output-channel axis of the weight (the per-channel quantization axis)
    channels: int
    bias_scale: float  # the bias is multiplied by this in the output (Gemm's beta)


def _broadcasts_on_last(shape: tuple[int, ...], n: int) -> bool:
    """True if a constant of ``shape`` adds one value per column of an (…, n) output."""
    return all(d == 1 for d in shape[:-1]) and (not shape or shape[-1] in (1, n))


def _bias_reason(graph: Graph, name: str, channels: int) -> str | None:
    """Why tensor ``name`` cannot serve as a per-output-channel bias, or None (absent is fine)."""
    if not name:
        return None
    if not graph.is_constant(name) or not _broadcasts_on_last(graph.array(name).shape, channels):
        return "non_constant_bias"
    return None


def _layer(graph: Graph, k: int) -> Layer | str:
    """Layer ``k`` (Conv, Gemm or MatMul with constant weights), or why it cannot be corrected."""
    node = graph.nodes[k]
    if len(node.input) < 2 or not graph.is_constant(node.input[1]):
        return "non_constant_weights"
    weight = graph.array(node.input[1])
    bias = node.input[2] if len(node.input) > 2 else ""
    if node.op_type == "Conv":
        return _bias_reason(graph, bias, weight.shape[0]) or Layer(k, node.input[1], (k, 2), 0, weight.shape[0], 1.0)
    if weight.ndim != 2:
        return "weights_not_2d"
    if node.op_type == "Gemm":
        beta = float(attribute(node, "beta", 1.0))
        if attribute(node, "transA", 0):
            return "gemm_transA"
        if beta == 0.0:
            return "gemm_beta_zero"
        axis = 0 if attribute(node, "transB", 0) else 1
        return _bias_reason(graph, bias, weight.shape[axis]) or Layer(k, node.input[1], (k, 2), axis, weight.shape[axis], beta)
    add = graph.sole_consumer(node.output[0])
    if add is None or graph.nodes[add].op_type != "Add":
        return "matmul_without_bias_add"
    index = 1 - list(graph.nodes[add].input).index(node.output[0])
    bias = graph.nodes[add].input[index]
    if not bias:
        return "matmul_without_bias_add"
    return _bias_reason(graph, bias, weight.shape[1]) or Layer(k, node.input[1], (add, index), 1, weight.shape[1], 1.0)


def find_layers(graph: Graph) -> tuple[list[Layer], Counter[str]]:
    """Correctable layers in graph order, and the other weighted nodes counted by reason."""
    layers: list[Layer] = []
    skipped: Counter[str] = Counter()
    for k, node in enumerate(graph.nodes):
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            found = _layer(graph, k)
            if isinstance(found, str):
                skipped[found] += 1
            else:
                layers.append(found)
    return layers, skipped


def _upstream_layers(graph: Graph, layers: list[Layer]) -> dict[int, set[int]]:
    """For every layer, the layers whose outputs its input depends on."""
    is_layer = {layer.node for layer in layers}
    reach: dict[str, set[int]] = {}
    for k, node in enumerate(graph.nodes):
        found: set[int] = set().union(*(reach.get(name, set()) for name in node.input))
        if k in is_layer:
            found = found | {k}
        for out in node.output:
            reach[out] = found
    return {layer.node: reach.get(graph.nodes[layer.node].input[0], set()) for layer in layers}


def _conv_output_means(node: onnx.NodeProto, opset: int, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Per-channel mean of ``conv(w, x)`` (no bias) for each (w, x), with ``node``'s attributes."""
    nodes, inputs, outputs, feeds, inits = [], [], [], {}, []
    for n, (w, x) in enumerate(pairs):
        conv = onnx.helper.make_node("Conv", [f"x{n}", f"w{n}"], [f"y{n}"])
        conv.attribute.extend(node.attribute)
        nodes.append(conv)
        inputs.append(onnx.helper.make_tensor_value_info(f"x{n}", onnx.TensorProto.FLOAT, list(x.shape)))
        outputs.append(onnx.helper.make_tensor_value_info(f"y{n}", onnx.TensorProto.FLOAT, None))
        inits.append(onnx.numpy_helper.from_array(w.astype(np.float32), f"w{n}"))
        feeds[f"x{n}"] = x.astype(np.float32)
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "conv", inputs, outputs, inits), opset_imports=[onnx.helper.make_opsetid("", opset)])
    results = session(model).run(None, feeds)
    return [np.asarray(y, dtype=np.float64).mean(axis=tuple(a for a in range(y.ndim) if a != 1)) for y in results]


def _mean_shift(graph: Graph, layer: Layer, opset: int, w_q: np.ndarray, x_q: np.ndarray, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ε = mean(layer(Q(W), x̃)) − mean(layer(W, x)) per output channel, bias excluded."""
    node = graph.nodes[layer.node]
    if node.op_type == "Conv":
        mean_q, mean_f = _conv_output_means(node, opset, [(w_q, x_q), (w, x)])
        return mean_q - mean_f
    flat_q, flat = x_q.reshape(-1, x_q.shape[-1]).mean(axis=0), x.reshape(-1, x.shape[-1]).mean(axis=0)
    if node.op_type == "Gemm":
        alpha = float(attribute(node, "alpha", 1.0))
        if attribute(node, "transB", 0):
            w_q, w = w_q.T, w.T
        return alpha * (flat_q @ w_q - flat @ w)
    return flat_q @ w_q - flat @ w


def _output_bias(float_model: onnx.ModelProto, model: onnx.ModelProto, input_name: str, inputs: list[np.ndarray]) -> list[dict[str, float]]:
    """Per output of ``model`` vs ``float_model``: mean |diff|, and mean over channels (axis 1) of
    |mean diff| over images and the other axes — the per-channel bias a correction targets."""
    names = [o.name for o in float_model.graph.output]
    ref, cand = session(float_model), session(model)
    sum_abs = [0.0] * len(names)
    sum_channel: list[Any] = [0.0] * len(names)
    for x in inputs:
        for i, (r, c) in enumerate(zip(ref.run(names, {input_name: x}), cand.run(names, {input_name: x}))):
            diff = c.astype(np.float64) - r
            sum_abs[i] += float(np.mean(np.abs(diff)))
            sum_channel[i] = sum_channel[i] + (diff.mean(axis=tuple(a for a in range(diff.ndim) if a != 1)) if diff.ndim > 1 else diff)
    return [
        {"name": n, "mean_abs_diff": a / len(inputs), "mean_abs_channel_bias": float(np.mean(np.abs(d / len(inputs))))}
        for n, a, d in zip(names, sum_abs, sum_channel)
    ]


def bias_correct_onnx(
    src: Path,
    dest: Path,
    manifest: Path,
    spec: InputSpec,
    per_channel: bool,
    *,
    sequential: bool = True,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Write ``src`` with biases corrected for ``per_channel`` (else per-tensor) int8 weights to ``dest``; return the report.

    Statistics come from the first ``max_samples`` (all if None) calibration images of
    ``manifest``. The report gives, per output, the weight-only-quantized model's mean |diff| and
    mean per-channel bias vs the float model, before and after the correction (activations in
    float, on the same images: an in-sample figure).
    """
    src, dest = Path(src), Path(dest)
    float_model = onnx.load(str(src))
    opset = next(o.version for o in float_model.opset_import if o.domain in ("", "ai.onnx"))
    out_model = onnx.ModelProto()
    out_model.CopyFrom(float_model)
    out = Graph(out_model)
    layers, skipped = find_layers(out)
    # every layer gets a private bias (zeros if it had none) before the copies are taken
    bias_of = {layer.node: out.own_constant(*layer.bias_at, np.zeros(layer.channels)) for layer in layers}
    out.commit()
    sim_model, plain_model = onnx.ModelProto(), onnx.ModelProto()
    sim_model.CopyFrom(out_model)
    plain_model.CopyFrom(out_model)
    sim, plain = Graph(sim_model), Graph(plain_model)
    axis = {layer.node: (layer.axis if per_channel else None) for layer in layers}
    quantized = {layer.weight: fake_quantize(out.array(layer.weight), axis[layer.node]) for layer in layers}
    for name, value in quantized.items():
        plain.set_array(name, value)

    inputs = load_inputs(src, manifest, spec, max_samples)
    input_of = {layer.node: out.nodes[layer.node].input[0] for layer in layers}
    float_means = mean_tensors(float_model, out.input_name, sorted(set(input_of.values())), inputs)
    upstream = _upstream_layers(out, layers)
    pending, done, rounds = list(layers), set(), 0
    shifts: list[dict[str, Any]] = []
    while pending:
        ready = [layer for layer in pending if upstream[layer.node] <= done] if sequential else pending
        names = sorted({input_of[layer.node] for layer in ready})
        quant_means = mean_tensors(sim.commit(), sim.input_name, names, inputs) if sequential else float_means
        rounds += 1
        for layer in ready:
            x = float_means[input_of[layer.node]]
            eps = _mean_shift(out, layer, opset, quantized[layer.weight], quant_means[input_of[layer.node]], out.array(layer.weight), x)
            bias = out.array(bias_of[layer.node]) - eps / layer.bias_scale
            for graph in (out, sim):
                graph.set_array(bias_of[layer.node], bias)
            sim.set_array(layer.weight, quantized[layer.weight])
            shifts.append({"layer": out.nodes[layer.node].name, "op": out.nodes[layer.node].op_type, "max_abs_shift": float(np.max(np.abs(eps))), "mean_abs_shift": float(np.mean(np.abs(eps)))})
        done |= {layer.node for layer in ready}
        pending = [layer for layer in pending if layer.node not in done]

    out.commit()
    before = _output_bias(float_model, plain.commit(), out.input_name, inputs)
    after = _output_bias(float_model, sim.commit(), out.input_name, inputs)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(save_bytes(out_model))
    log.info("%s: corrected %d biases for %s int8 weights in %d rounds", src, len(layers), "per-channel" if per_channel else "per-tensor", rounds)
    return {
        "source": str(src),
        "granularity": "per_channel" if per_channel else "per_tensor",
        "sequential": sequential,
        "samples": len(inputs),
        "rounds": rounds,
        "layers_corrected": len(layers),
        "skipped": dict(sorted(skipped.items())),
        "layers": shifts,
        "weight_quantized_outputs": {"before": before, "after": after},
    }
