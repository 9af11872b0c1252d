"""The shared ONNX graph index and pruning (pipeline.onnx_graph), and the shared model comparison (pipeline.convert.verify)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.convert.verify import Criterion, MaxAbsDiff, compare_outputs
from pipeline.errors import PosezooError
from pipeline.onnx_graph import OnnxGraph, remove_unused_initializers


def _graph() -> Any:
    """x → Mul(x, x) → a; a → Relu → b (output); a → Add(a, w) → c (output); initializers w, unused u1, u2."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["a"], name="mul"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Add", ["a", "w"], ["c"], name="add"),
        helper.make_node("Clip", ["c", "", "w"], ["d"], name="clip"),
    ]
    inits = [numpy_helper.from_array(np.full(1, v, np.float32), n) for n, v in (("u1", 1.0), ("w", 2.0), ("u2", 3.0))]
    value = helper.make_tensor_value_info
    return helper.make_graph(nodes, "g", [value("x", TensorProto.FLOAT, [1])], [value("b", TensorProto.FLOAT, [1]), value("d", TensorProto.FLOAT, [1])], inits)


def test_index_maps_producers_and_distinct_readers() -> None:
    index = OnnxGraph(_graph())
    assert index.producer == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert index.consumers["x"] == [0]  # Mul reads x twice: one reader
    assert index.consumers["a"] == [1, 2]
    assert "" not in index.consumers  # an absent optional input reads nothing
    assert [n.name for n in index.consumer_nodes("w")] == ["add", "clip"]
    assert index.consumer_nodes("d") == [] and index.producer_node("x") is None
    assert index.producer_node("c").name == "add"
    assert index.outputs == {"b", "d"} and set(index.initializers) == {"u1", "w", "u2"}


def test_remove_unused_initializers_keeps_order() -> None:
    graph = _graph()
    graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "x2"))
    graph.node[0].input[1] = "x2"
    remove_unused_initializers(graph)
    assert [i.name for i in graph.initializer] == ["w", "x2"]


class _Sum(Criterion):
    """Passes while the summed |diff| of an output stays under ``limit``."""

    def __init__(self, limit: float) -> None:
        super().__init__("ref", "cand")
        self.limit = limit

    def start(self, index: int, reference: np.ndarray) -> dict[str, Any]:
        return {"index": index, "sum": 0.0, "samples": []}

    def add(self, state: dict[str, Any], sample: Any, reference: np.ndarray, candidate: np.ndarray) -> None:
        state["sum"] += float(np.abs(reference - candidate).sum())
        state["samples"].append(sample)

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "ok": state["sum"] <= self.limit}

    def failure(self, entry: dict[str, Any]) -> str:
        return f"output {entry['index']} sums {entry['sum']:g}"


def test_compare_outputs_judges_every_output_and_raises_on_the_first_failure() -> None:
    samples = [("s0", np.array([1.0])), ("s1", np.array([2.0]))]
    ref = lambda x: [x, 2 * x]  # noqa: E731
    cand = lambda x: [x + 0.5, 2 * x + 1.0]  # noqa: E731
    count, entries = compare_outputs(samples, ref, cand, _Sum(10.0))
    assert count == 2 and [e["sum"] for e in entries] == [1.0, 2.0] and entries[0]["samples"] == ["s0", "s1"]
    with pytest.raises(PosezooError, match="output 1 sums 2"):
        compare_outputs(samples, ref, cand, _Sum(1.5))
    with pytest.raises(PosezooError, match="cand: has 1 outputs, ref has 2"):
        compare_outputs(samples, ref, lambda x: [x], _Sum(10.0))
    assert compare_outputs([], ref, cand, _Sum(0.0)) == (0, [])


def test_max_abs_diff_records_the_worst_sample_and_tolerance() -> None:
    samples = [("s0", np.array([1.0, -4.0])), ("s1", np.array([1.0, 3.0]))]
    criterion = MaxAbsDiff("ref.tflite", "cand.onnx", atol=0.1, rtol=0.01, overrides={0: {"atol": 1.0}})
    count, (entry,) = compare_outputs(samples, lambda x: [x], lambda x: [x * 1.01], criterion)
    assert count == 2 and entry["sample"] == "s0" and entry["max_abs_diff"] == pytest.approx(0.04)
    assert entry["reference_max_abs"] == 4.0 and entry["tolerance"] == pytest.approx(1.04) and entry["ok"]
    strict = MaxAbsDiff("ref.tflite", "cand.onnx", atol=0.0, rtol=0.0, overrides=None)
    with pytest.raises(PosezooError, match=r"cand.onnx: output 0 differs from ref.tflite by 0.04 on s0 \(tolerance 0 = "):
        compare_outputs(samples, lambda x: [x], lambda x: [x * 1.01], strict)
