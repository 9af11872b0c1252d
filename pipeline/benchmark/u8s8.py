"""Exact S8S8 → U8S8 rewrite of a QDQ ONNX model, for onnxruntime's faster x86 int8 kernels.

The pipeline's ONNX exports are S8S8 QDQ (int8 activations, int8 weights). onnxruntime's x86
int8 GEMM/conv kernels are built around uint8 activations × int8 weights (VPMADDUBSW / VNNI take
one unsigned and one signed operand), so on x86 the U8S8 form of the same model can be faster.

The rewrite needs no recalibration and changes no real value: an int8 activation ``q_s8`` with
scale ``s`` and zero point ``z`` represents ``s · (q_s8 − z)``; the uint8 value
``q_u8 = q_s8 + 128`` with zero point ``z + 128`` represents ``s · (q_u8 − (z + 128))``, the same
number, and saturation to [−128, 127] becomes saturation to [0, 255]. So for every activation
QuantizeLinear whose zero point is an int8 initializer and whose output feeds only
DequantizeLinear nodes, the zero point of the QuantizeLinear and of those DequantizeLinear nodes
becomes the uint8 ``z + 128``. Weights (DequantizeLinear of an int8 initializer) and biases
(int32) are left as they are.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from pipeline.onnx_graph import OnnxGraph

QUANTIZE = "QuantizeLinear"
DEQUANTIZE = "DequantizeLinear"
#: The standard ops and onnxruntime's contrib ops of the same name (16-bit QDQ uses the latter).
_DOMAINS = ("", "ai.onnx", "com.microsoft")


def _is(node: onnx.NodeProto, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in _DOMAINS


def int8_activation_quantizers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The QuantizeLinear nodes :func:`to_u8s8` rewrites (int8 zero-point initializer, output
    read only by DequantizeLinear nodes and not a graph output).

    Empty for a float model or a model with 16-bit activations, where there is nothing to
    rewrite.
    """
    graph = model.graph
    index = OnnxGraph(graph)
    found = []
    for node in graph.node:
        if not _is(node, QUANTIZE) or len(node.input) < 3:
            continue  # without a zero point, QuantizeLinear already produces uint8
        zero_point = index.initializers.get(node.input[2])
        if zero_point is None or zero_point.data_type != TensorProto.INT8:
            continue
        tensor = node.output[0]
        readers = index.consumer_nodes(tensor)
        if tensor in index.outputs or not readers or not all(_is(r, DEQUANTIZE) and r.input[0] == tensor for r in readers):
            continue
        found.append(node)
    return found


def to_u8s8(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the S8S8 QDQ ``model`` with uint8 activations (zero point + 128) and int8 weights.

    Exact: the rewritten model computes the same real values (see the module docstring). A model
    without int8 activation Q/DQ pairs comes back unchanged.
    """
    out = copy.deepcopy(model)
    graph = out.graph
    initializers = {i.name: i for i in graph.initializer}
    rewritten_tensors = {q.output[0] for q in int8_activation_quantizers(out)}
    taken = set(initializers) | {v.name for v in graph.value_info} | {n for node in graph.node for n in list(node.input) + list(node.output)}
    uint8_names: dict[str, str] = {}

    def uint8_zero_point(name: str) -> str:
        """Name of the uint8 twin of int8 zero-point initializer ``name`` (created once)."""
        if name not in uint8_names:
            z = numpy_helper.to_array(initializers[name]).astype(np.int16)
            new_name = f"{name}_u8"
            while new_name in taken:
                new_name += "_"
            taken.add(new_name)
            graph.initializer.append(numpy_helper.from_array((z + 128).astype(np.uint8), new_name))
            uint8_names[name] = new_name
        return uint8_names[name]

    for node in graph.node:
        if (_is(node, QUANTIZE) and node.output[0] in rewritten_tensors) or (_is(node, DEQUANTIZE) and node.input[0] in rewritten_tensors):
            node.input[2] = uint8_zero_point(node.input[2])
    for info in graph.value_info:
        if info.name in rewritten_tensors and info.type.HasField("tensor_type"):
            info.type.tensor_type.elem_type = TensorProto.UINT8
    # Drop int8 zero points no node reads any more (weights may still share one).
    still_read = {n for node in graph.node for n in node.input}
    for name in uint8_names:
        if name not in still_read:
            graph.initializer.remove(initializers[name])
    return out
