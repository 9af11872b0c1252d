"""Canonical ONNX naming, so the same TFLite always gives the same ONNX bytes.

tf2onnx names generated nodes and tensors from a process-global counter whose value differs
from one run to the next (``Mean_Squeeze__596`` vs ``__597``), and those names reach the int8
files quantized from the ONNX. Renaming every internal node and tensor by its position in the
graph (inputs and outputs keep their names) makes conversions byte-for-byte reproducible, which
the pipeline promises for its int8 outputs.
"""

from __future__ import annotations

import onnx


def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename internal nodes and tensors of ``model`` (in place) by graph position; returns it."""
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    initializers = {init.name for init in graph.initializer}
    mapping: dict[str, str] = {}

    def rename(name: str) -> str:
        if name in keep:
            return name
        if name not in mapping:
            mapping[name] = f"{'w' if name in initializers else 't'}{len(mapping)}"
        return mapping[name]

    for index, node in enumerate(graph.node):
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = f"{node.op_type}_{index}"
    for init in graph.initializer:
        init.name = rename(init.name)
    ordered = sorted(graph.initializer, key=lambda init: int(init.name[1:]) if init.name not in keep else -1)
    graph.ClearField("initializer")
    graph.initializer.extend(ordered)
    graph.ClearField("value_info")
    return model
