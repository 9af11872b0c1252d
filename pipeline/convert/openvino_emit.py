"""The ONNX graph an OpenVINO IR is converted into, and the view of one IR op its mappings get.

:class:`GraphBuilder` holds the nodes and initializers emitted so far and the value of every IR
output already walked; :class:`IrOp` hands a mapping (:mod:`pipeline.convert.openvino_ops`) one
IR node's inputs as ONNX tensor names or constants. Kept apart from the mappings and from the walk
(:mod:`pipeline.convert.openvino_to_onnx`) so that both can use them without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


class Unmapped(Exception):
    """An op (or an attribute value of it) that has no ONNX mapping here; collected, not raised per node."""


class GraphBuilder:
    """The ONNX graph under construction and the value of every OpenVINO output seen so far.

    A value is either an ONNX tensor name or a numpy array (a constant, materialized as an
    initializer only when an emitted node reads it, so folded-away f16 weights never reach the
    file).
    """

    def __init__(self, xml: Path, opset: int) -> None:
        self.xml = xml
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.values: dict[tuple[int, int], str | np.ndarray | None] = {}
        self._materialized: dict[int, tuple[np.ndarray, str]] = {}  # id → (array kept alive, so ids are never reused, name)
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, value: np.ndarray, stem: str = "const") -> str:
        """An initializer holding ``value``; one per array object (a constant read by several nodes is stored once)."""
        from onnx import numpy_helper

        key = id(value)
        if key not in self._materialized:
            name = self.fresh(stem)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
            self._materialized[key] = (value, name)
        return self._materialized[key][1]

    def emit(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1, **attrs: Any) -> list[str]:
        """Append one ONNX node; returns its output names."""
        from onnx import helper

        names = [self.fresh(op_type) for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(op_type), **attrs))
        return names


class IrOp:
    """One OpenVINO node as the mappings see it: its inputs as ONNX names or constants, shapes, attributes."""

    def __init__(self, graph: GraphBuilder, node: Any) -> None:
        self.graph = graph
        self.node = node
        self.type = node.get_type_name()
        self.attrs = node.get_attributes()
        self.inputs = [graph.values[output_key(i.get_source_output())] for i in node.inputs()]

    def name(self, i: int) -> str:
        """Input ``i`` as an ONNX tensor name (constants become initializers)."""
        value = self.inputs[i]
        if isinstance(value, np.ndarray):
            return self.graph.constant(value)
        assert isinstance(value, str)
        return value

    def const(self, i: int) -> np.ndarray:
        """Input ``i``'s value; the mapping needs it known at conversion time (axes, shapes, pads)."""
        value = self.inputs[i]
        if not isinstance(value, np.ndarray):
            raise Unmapped(f"{self.type} with a computed (non-constant) input {i}")
        return value

    def is_const(self, i: int) -> bool:
        return isinstance(self.inputs[i], np.ndarray)

    def in_shape(self, i: int = 0) -> list[int]:
        return [int(d) for d in self.node.get_input_shape(i)]

    def out_shape(self, i: int = 0) -> list[int]:
        return [int(d) for d in self.node.get_output_shape(i)]

    def emit(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> list[str]:
        return self.graph.emit(op_type, inputs, outputs, **attrs)

    def i64(self, values: Sequence[int] | np.ndarray) -> str:
        return self.graph.constant(np.asarray(values, dtype=np.int64).reshape(-1), "i64")


def output_key(output: Any) -> tuple[int, int]:
    return (output.get_node().get_instance_id(), output.get_index())
