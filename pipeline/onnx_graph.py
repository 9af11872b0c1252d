"""The one producer / consumer index of an ONNX graph, and the one unused-initializer pruning.

Every graph pass here (the converters' rewrites in :mod:`pipeline.convert`, the float-model
transforms in :mod:`pipeline.optimize`, the footprint reader) needs "which node makes this tensor"
and "which nodes read it"; they take both from :class:`OnnxGraph`, as onnxruntime's quantization
passes take them from its one ``ONNXModel`` (``output_name_to_node`` / ``input_name_to_nodes`` /
``remove_unused_constant``). It sits at the top of ``pipeline`` and imports nothing of it, so
convert, optimize and footprint can all use it without importing one another.

The index is a snapshot of the graph when it is built: a pass that rewires nodes keeps reading the
maps of the graph it started from (as each pass did with its own maps before), and builds a new
index when it needs the rewired graph.
"""

from __future__ import annotations

from collections import defaultdict

import onnx


class OnnxGraph:
    """Producer / consumer maps, graph outputs and initializers of ``graph``, by tensor name.

    Nodes are referred to by their index in :attr:`nodes` (graph order, which ONNX requires to be
    topological); :meth:`producer_node` / :meth:`consumer_nodes` give the nodes themselves.
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        #: The graph's nodes when the index was built, in graph (topological) order.
        self.nodes = list(graph.node)
        #: Tensor name → index of the node that makes it (optional outputs named "" are skipped).
        self.producer = {out: k for k, node in enumerate(self.nodes) for out in node.output if out}
        #: Tensor name → indices of the nodes reading it, in graph order; a node reading a tensor
        #: twice is one reader (``len`` counts readers, not input slots). Absent names read as [].
        self.consumers: defaultdict[str, list[int]] = defaultdict(list)
        for k, node in enumerate(self.nodes):
            for name in dict.fromkeys(node.input):
                if name:
                    self.consumers[name].append(k)
        self.outputs = {o.name for o in graph.output}
        self.initializers = {t.name: t for t in graph.initializer}

    def producer_node(self, name: str) -> onnx.NodeProto | None:
        """The node that makes tensor ``name``, or None (a graph input, an initializer, unknown)."""
        k = self.producer.get(name)
        return None if k is None else self.nodes[k]

    def consumer_nodes(self, name: str) -> list[onnx.NodeProto]:
        """The nodes reading tensor ``name``, in graph order, each once."""
        return [self.nodes[k] for k in self.consumers.get(name, [])]


def remove_unused_initializers(graph: onnx.GraphProto) -> None:
    """Drop the initializers no node reads (only nodes count), keeping the others in their order.

    The order is the file's: the converters' outputs are byte-for-byte reproducible.
    """
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    if len(keep) != len(graph.initializer):
        graph.ClearField("initializer")
        graph.initializer.extend(keep)
