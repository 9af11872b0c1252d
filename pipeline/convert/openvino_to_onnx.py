"""OpenVINO IR (.xml + .bin, FP32 or FP16 weights) → float ONNX, built node by node with ``onnx.helper``.

The IR is read through OpenVINO's own API (``Core.read_model``), never by parsing the XML: the
reader resolves the .bin offsets, upgrades old opsets and runs shape inference, so every tensor
here has the static shape and element type OpenVINO itself computes. The ops are walked in
topological order (``get_ordered_ops``); each maps to a few ONNX nodes of the requested opset.

Constant subgraphs are folded with OpenVINO's own reference kernels (``Node.evaluate``) rather
than re-implemented: FP16 IRs (``compress_to_fp16``) and IRs converted from MediaPipe's TFLite
files store weights as f16 Constants behind a ``Convert`` to f32 ("weight decompression"), and
their bias / PReLU slopes reach the layer through ``Unsqueeze`` / ``Reshape`` of constants. All of
that becomes plain float32 initializers, so the ONNX carries the exact f32 values the OpenVINO
CPU plugin computes with. ``ShapeOf`` is folded from the static shape.

Each op type maps to ONNX nodes by its function in :mod:`pipeline.convert.openvino_ops`, which
resolves OpenVINO's conventions that differ from ONNX. Anything outside that set is refused with
one error listing every unmapped op type and its count, so the user sees the whole gap at once.

A ``Conv`` followed by a per-channel constant ``Add`` (how OpenVINO spells a biased convolution)
is fused into ``Conv``'s bias input, as tf2onnx writes it, so the graph the optimize and quantize
stages see has the same shape whichever converter made it.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.convert.canonical import canonicalize
from pipeline.convert.openvino_emit import GraphBuilder, IrOp, Unmapped, output_key
from pipeline.convert.openvino_ops import MAPPINGS, OPSETS, STRUCTURAL
from pipeline.convert.runners import openvino_input_layout, read_openvino_model
from pipeline.errors import PosezooError
from pipeline.onnx_graph import OnnxGraph, remove_unused_initializers

log = logging.getLogger(__name__)


def _fold(node: Any, inputs: list[np.ndarray]) -> list[np.ndarray] | None:
    """Outputs of ``node`` on constant ``inputs`` with OpenVINO's reference kernel; None if it has none."""
    import openvino as ov

    if any(not node.get_output_partial_shape(i).is_static for i in range(node.get_output_size())):
        return None
    outputs = [ov.Tensor(node.get_output_element_type(i), node.get_output_shape(i)) for i in range(node.get_output_size())]
    try:
        if not node.evaluate(outputs, [ov.Tensor(np.ascontiguousarray(x)) for x in inputs]):
            return None
    except RuntimeError:
        return None
    return [np.array(t.data, copy=True) for t in outputs]


def _tensor_name(output: Any, fallback: str, taken: set[str]) -> str:
    names = sorted(output.get_names())
    name = names[0] if names else fallback
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _fuse_conv_bias(graph: Any) -> int:
    """Fold ``Add(Conv(x, W), b)`` with a per-channel constant ``b`` into ``Conv``'s bias; returns how many."""
    from onnx import numpy_helper

    index = OnnxGraph(graph)  # built once, on the unfused graph
    fused, dead = 0, []
    for node in graph.node:
        if node.op_type != "Add":
            continue
        for conv_in, bias_in in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
            conv = index.producer_node(conv_in)
            if conv is None or conv.op_type != "Conv" or len(conv.input) != 2 or len(index.consumers[conv_in]) != 1 or conv_in in index.outputs or bias_in not in index.initializers:
                continue
            weights = index.initializers.get(conv.input[1])
            bias = numpy_helper.to_array(index.initializers[bias_in])
            if weights is None or bias.dtype != np.float32:
                continue
            channels, rank = weights.dims[0], len(weights.dims)
            # Against the (N, C, spatial...) output only the channel axis may exceed 1.
            padded = (1,) * (rank - bias.ndim) + bias.shape if bias.ndim <= rank else None
            if padded is None or padded[1] not in (1, channels) or any(d != 1 for i, d in enumerate(padded) if i != 1):
                continue
            flat = np.broadcast_to(bias.reshape(-1), (channels,)).astype(np.float32)
            name = f"{conv.output[0]}_bias"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(flat), name))
            conv.input.append(name)
            conv.output[0] = node.output[0]
            dead.append(node)
            fused += 1
            break
    for node in dead:
        graph.node.remove(node)
    remove_unused_initializers(graph)
    return fused


def openvino_to_onnx(xml: Path, onnx_path: Path, opset: int) -> dict[str, Any]:
    """Convert the IR ``xml`` (with its .bin) to float ONNX at ``onnx_path`` (written atomically).

    Returns the report's view of it: IR op type counts, input name / shape / layout, output
    names (in the IR's Result order), how many ops were folded and how many ONNX nodes remain.
    """
    import onnx
    from onnx import helper

    xml = Path(xml)
    if opset not in OPSETS:
        raise PosezooError(f"convert.opset {opset}: the OpenVINO IR converter writes opsets {OPSETS.start}-{OPSETS.stop - 1}; set convert.opset in params.yaml")
    model = read_openvino_model(xml)
    if len(model.inputs) != 1:
        raise PosezooError(f"{xml}: the IR has {len(model.inputs)} inputs; posezoo converts single-input models")
    for port in model.inputs:
        if not port.get_partial_shape().is_static:
            raise PosezooError(f"{xml}: input {port.get_any_name()} has a dynamic shape {port.get_partial_shape()}; reshape the IR to a static input (openvino Model.reshape) and save it")
    graph = GraphBuilder(xml, opset)
    ops = list(model.get_ordered_ops())
    type_counts = Counter(op.get_type_name() for op in ops)
    unmapped: Counter[str] = Counter()
    reasons: dict[str, str] = {}
    taken: set[str] = set()
    onnx_inputs = []
    folded = 0
    for node in ops:
        kind = node.get_type_name()
        outs = [(node.get_instance_id(), i) for i in range(node.get_output_size())]
        if kind == "Parameter":
            name = _tensor_name(node.output(0), node.get_friendly_name(), taken)
            dtype = helper.np_dtype_to_tensor_dtype(node.get_output_element_type(0).to_dtype())
            onnx_inputs.append(helper.make_tensor_value_info(name, dtype, [int(d) for d in node.get_output_shape(0)]))
            graph.values[outs[0]] = name
            continue
        if kind == "Constant":
            graph.values[outs[0]] = np.array(node.get_data(), copy=True)
            continue
        if kind == "Result":
            continue  # outputs are made below, in the model's Result order (not the walk's)
        inputs = [graph.values[output_key(i.get_source_output())] for i in node.inputs()]
        if any(v is None for v in inputs):  # downstream of an unmapped op: cannot be built, but list its type if it has no mapping either
            if kind not in MAPPINGS and kind not in STRUCTURAL:
                unmapped[kind] += 1
                reasons.setdefault(kind, kind)
            graph.values.update(dict.fromkeys(outs))
            continue
        if kind == "ShapeOf" and node.get_input_partial_shape(0).is_static:
            dtype = node.get_output_element_type(0).to_dtype()
            graph.values[outs[0]] = np.array(node.get_input_shape(0), dtype=dtype)
            folded += 1
            continue
        if all(isinstance(v, np.ndarray) for v in inputs):
            values = _fold(node, inputs)  # type: ignore[arg-type]
            if values is not None:
                graph.values.update(zip(outs, values))
                folded += 1
                continue
        dynamic = [str(node.get_output_partial_shape(i)) for i in range(node.get_output_size()) if not node.get_output_partial_shape(i).is_static]
        if dynamic and kind in MAPPINGS:
            # e.g. an Interpolate whose scales sit behind an f16 Convert: OpenVINO's shape
            # inference does not look through it, and the mappings need static shapes.
            raise PosezooError(
                f"{xml}: {kind} '{node.get_friendly_name()}' has no static output shape ({dynamic[0]}); "
                "save the IR with static shapes (openvino Model.reshape, or save_model(..., compress_to_fp16=False) when shape inputs are compressed)"
            )
        mapping = MAPPINGS.get(kind)
        try:
            if mapping is None:
                raise Unmapped(kind)
            names = mapping(IrOp(graph, node))
        except Unmapped as why:
            unmapped[kind] += 1
            reasons.setdefault(kind, str(why))
            graph.values.update(dict.fromkeys(outs))
            continue
        graph.values.update(zip(outs, names))
    if unmapped:
        listed = ", ".join(f"{kind} ×{n}" + (f" ({reasons[kind]})" if reasons[kind] != kind else "") for kind, n in sorted(unmapped.items(), key=lambda kv: (-kv[1], kv[0])))
        raise PosezooError(
            f"{xml}: {len(unmapped)} op type{'s have' if len(unmapped) > 1 else ' has'} no ONNX mapping: {listed}; "
            "re-export the model without them, or add a mapping in pipeline/convert/openvino_ops.py"
        )
    onnx_outputs = []
    renames: dict[str, str] = {}
    for index, result in enumerate(model.get_results()):
        source = result.input(0).get_source_output()
        value = graph.values[output_key(source)]
        name = _tensor_name(source, f"output_{index}", taken)
        if isinstance(value, np.ndarray):
            graph.emit("Identity", [graph.constant(value)], [name])
        elif value in renames or any(value == i.name for i in onnx_inputs):
            graph.emit("Identity", [value], [name])  # one tensor feeding two Results, or the input itself
        else:
            renames[value] = name
        dtype = helper.np_dtype_to_tensor_dtype(result.get_output_element_type(0).to_dtype())
        onnx_outputs.append(helper.make_tensor_value_info(name, dtype, [int(d) for d in result.get_output_shape(0)]))
    for node in graph.nodes:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    onnx_graph = helper.make_graph(graph.nodes, model.get_friendly_name() or "openvino_ir", onnx_inputs, onnx_outputs, graph.initializers)
    fused = _fuse_conv_bias(onnx_graph)
    onnx_model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="posezoo-openvino-ir")
    canonicalize(onnx_model)
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise PosezooError(f"{xml}: the converted ONNX does not validate ({str(err).splitlines()[0]}); report it with the IR attached") from err
    with atomic_path(onnx_path) as tmp:
        onnx.save(onnx_model, str(tmp))
    in_port = model.inputs[0]
    info = {
        "op_types": dict(sorted(type_counts.items())),
        "input": {"name": onnx_inputs[0].name, "shape": [int(d) for d in in_port.get_shape()], "layout": openvino_input_layout(model)},
        "outputs": [o.name for o in onnx_outputs],
        "folded_ops": folded,
        "fused_conv_bias": fused,
        "onnx_nodes": len(onnx_model.graph.node),
        "opset": opset,
    }
    log.info("%s → %s: %d IR ops (%d folded) → %d ONNX nodes", xml.name, Path(onnx_path).name, len(ops), folded, info["onnx_nodes"])
    return info
