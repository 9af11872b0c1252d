"""Hand-counted figures on tiny models the tests build, and the MACC / planner rules on synthetic graphs.

Every expected number is derived in the comment next to it, from the convention documented in
pipeline/footprint/macc.py and pipeline/footprint/planner.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.footprint import estimate, format_text, select_targets, to_json
from pipeline.footprint.ir import Graph, Kind, Linear, Op, Tensor, dtype_bytes
from pipeline.footprint.macc import op_macc
from pipeline.footprint.planner import Buffer, plan_arena, place_greedy
from tests.footprint import models


# -- TFLite, int8, built by TensorFlow's converter --------------------------------------------
@pytest.mark.slow
def test_tflite_int8_counts_match_hand_count(unit_tflite: Path) -> None:
    fp = estimate(unit_tflite)
    assert [op.op_type for op in fp.graph.ops] == models.UNIT_OPS
    assert fp.macc.per_op == (
        8 * 8 * 4 * 3 * 3 * 3 + 4,  # conv: Ho·Wo·Co·Kh·Kw·Ci + Co
        8 * 8 * 4 * 3 * 3 + 4,  # depthwise: Ho·Wo·C·Kh·Kw + C
        8 * 8 * 4,  # add: output elements
        4 * 4 * 4 * 2 * 2,  # max pool 2×2: output elements × window
        0,  # reshape (flatten)
        5 * (64 + 1),  # fully connected: Co·(Ci+1)
    )
    assert fp.macc.total == 6916 + 2308 + 256 + 256 + 325
    # int8: conv 4·3·3·3 + depthwise 3·3·4 + dense 5·64; int32: three biases (4, 4, 5) + the reshape's shape (2)
    assert fp.weights.by_dtype == {"int8": 108 + 36 + 320, "int32": 4 * (4 + 4 + 5 + 2)}
    assert fp.weights.total_bytes == fp.weights.unique_bytes == 524
    assert fp.weights.quant.nbytes == 12 * fp.weights.quant.scales  # float32 scale + int64 zero point each
    assert fp.weights.quant.per_channel_tensors >= 4  # conv and depthwise weights and biases
    # Arena: input 192, conv 256, depthwise 256, add 256, pool 64 (+ flatten alias), dense 5 → 16.
    # At the ADD (step 3) the conv output (still read by it), the depthwise output and the sum are
    # live: 3 × 256 = 768, the peak; the planner reaches it.
    assert fp.arena.lower_bound_bytes == fp.arena.arena_bytes == 768
    assert fp.arena_tflm.arena_bytes == 768


@pytest.mark.slow
def test_tflite_float16_weights_count_two_bytes_and_dequantize_once(tmp_path: Path) -> None:
    import tensorflow as tf

    path = tmp_path / "f16.tflite"
    path.write_bytes(models.keras_tflite(lambda x: tf.keras.layers.Conv2D(4, 3)(x), (8, 8, 3), mode="float16"))
    fp = estimate(path)
    assert fp.weights.by_dtype == {"float16": 2 * (4 * 3 * 3 * 3 + 4)}  # weights and bias stored as float16
    dequantize = [m for op, m in zip(fp.graph.ops, fp.macc.per_op) if op.op_type == "DEQUANTIZE"]
    assert dequantize == [0, 0]  # constant inputs: evaluated once at load, not per inference
    assert fp.macc.total == 6 * 6 * 4 * 3 * 3 * 3 + 4  # the conv only
    # Input 8·8·3·4 = 768 and the dequantized float32 weights 432 and bias 16 live throughout,
    # the conv output 6·6·4·4 = 576 at the last step: 768 + 432 + 16 + 576.
    assert fp.arena.lower_bound_bytes == fp.arena.arena_bytes == 1792


# -- ONNX, written node by node ---------------------------------------------------------------
def test_onnx_qdq_folds_to_the_int8_graph(onnx_files: dict[str, Path]) -> None:
    fp = estimate(onnx_files["qdq"])
    # The input's Q and the output's DQ stay (float in, float out); every other Q/DQ is folded.
    assert [op.op_type for op in fp.graph.ops] == [
        "QuantizeLinear", "Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm", "DequantizeLinear",
    ]
    assert fp.macc.per_op == (
        2 * 3 * 8 * 8,  # quantize: 2 per element
        8 * 8 * 4 * 3 * 3 * 3 + 4,  # conv (pads 1: 8×8 out)
        4 * 8 * 8,  # relu: output elements
        4 * 8 * 8,  # global average pool: input elements
        0,  # flatten
        5 * (4 + 1),  # gemm: Co·(Ci+1)
        2 * 5,  # dequantize: 2 per element
    )
    # Weights are the int8/int32 initializers behind DequantizeLinear; scales/zero points apart.
    assert fp.weights.by_dtype == {"int8": 4 * 3 * 3 * 3 + 5 * 4, "int32": 4 * 4 + 4 * 5}
    # a_scale 4 + a_zp 1, w_scale 16 + w_zp 4, b_scale 16 + b_zp 16, g 4 + 1, gb 4 + 4
    assert (fp.weights.quant.nbytes, fp.weights.quant.scales, fp.weights.quant.per_channel_tensors) == (70, 11, 2)
    stored = {t.name: (t.dtype, t.nbytes) for t in fp.graph.tensors if not t.is_constant}
    assert stored["c"] == ("int8", 256)  # the conv output is stored as int8, not float
    # input float 768 [0,1] + its int8 copy 192 [1,2] is the peak: 960; later tensors are smaller.
    assert fp.arena.lower_bound_bytes == fp.arena.arena_bytes == 960


def test_onnx_float_counts_and_symbolic_batch(onnx_files: dict[str, Path]) -> None:
    fp = estimate(onnx_files["float"])
    assert fp.macc.total == 6916 + 256 + 256 + 0 + 25
    assert fp.weights.by_dtype == {"float32": 4 * (108 + 4 + 20 + 5)}
    # conv output 1024 + relu output 1024 at the relu: 2048
    assert fp.arena.lower_bound_bytes == fp.arena.arena_bytes == 2048
    assert fp.graph.notes == ("symbolic dimension 'N' (first seen on 'input') taken as 1",)


def test_unknown_op_is_named_and_not_counted(onnx_files: dict[str, Path]) -> None:
    fp = estimate(onnx_files["unknown"])
    assert fp.macc.not_counted == {"Hardmax": 1}
    assert fp.macc.per_op[-1] is None
    assert fp.macc.total == 7453  # everything else still counted
    assert fp.arena.arena_bytes > 0 and fp.weights.total_bytes == 548  # and still planned/weighed
    doc = to_json(fp, [])
    assert doc["not_counted_op_count"] == 1 and doc["not_counted_ops"] == {"Hardmax": 1}
    assert doc["ops"][-1]["macc"] is None
    assert "NOT COUNTED" in format_text(fp, []) and "Hardmax ×1" in format_text(fp, [])


# -- MACC conventions, one op of each kind ----------------------------------------------------
def _tensor(shape: tuple[int, ...], constant: bool = False) -> Tensor:
    import math

    return Tensor(f"t{shape}", shape, "int8", dtype_bytes("int8", math.prod(shape)), constant)


@pytest.mark.parametrize(
    ("kind", "attrs", "expected"),
    [
        (Kind.ELEMENTWISE, {}, 2 * 3 * 4),
        (Kind.CONVERT, {}, 2 * 2 * 3 * 4),
        (Kind.SOFTMAX, {}, 3 * 2 * 3 * 4),
        (Kind.BATCH_NORM, {}, 2 * 2 * 3 * 4),
        (Kind.REDUCE, {}, 4 * 6 * 4),  # input elements
        (Kind.MAX_POOL, {"window": 9}, 9 * 2 * 3 * 4),
        (Kind.RESIZE, {"taps": 0}, 0),
        (Kind.RESIZE, {"taps": 4}, 4 * 2 * 3 * 4),
        (Kind.BATCH_MATMUL, {"reduce": 7}, 7 * 2 * 3 * 4),
        (Kind.MOVE, {}, 0),
        (Kind.ALIAS, {}, 0),
        (Kind.PAD, {}, 0),
    ],
)
def test_macc_convention_per_kind(kind: Kind, attrs: dict[str, int], expected: int) -> None:
    graph = Graph("tflite", (_tensor((1, 4, 6, 4)), _tensor((1, 2, 3, 4))), (), (0,), (1,))
    assert op_macc(graph, Op(0, "X", kind, (0,), (1,), None, attrs)) == expected


def test_macc_linear_bias_and_unknown() -> None:
    graph = Graph("onnx", (_tensor((1, 4)), _tensor((1, 8)), _tensor((8, 4), constant=True)), (), (0,), (1,))
    with_bias = Op(0, "Gemm", Kind.LINEAR, (0, 2), (1,), Linear(1, 8, 1, 4, True))
    without = Op(0, "MatMul", Kind.LINEAR, (0, 2), (1,), Linear(1, 8, 1, 4, False))
    assert op_macc(graph, with_bias) == 8 * (4 + 1)
    assert op_macc(graph, without) == 8 * 4
    assert op_macc(graph, Op(0, "Mystery", Kind.UNKNOWN, (0,), (1,))) is None
    precomputed = Op(0, "Transpose", Kind.ELEMENTWISE, (2,), (1,))  # all inputs constant
    assert op_macc(graph, precomputed) == 0


# -- the planner -------------------------------------------------------------------------------
def test_greedy_matches_tflite_micro_unit_tests() -> None:
    # tensorflow/lite/micro/memory_planner/greedy_memory_planner_test.cc, TestGreedyMedium
    requests = [((i,), size, first, last) for i, (size, first, last) in enumerate(
        [(10, 0, 1), (20, 1, 2), (30, 2, 3), (40, 3, 4), (50, 0, 1)]
    )]
    placed = {b.tensors[0]: b.offset for b in place_greedy(requests)}
    assert placed == {0: 50, 1: 70, 2: 40, 3: 0, 4: 0}
    assert max(b.end for b in place_greedy(requests)) == 90
    # TestOverlapCase
    overlap = [((0,), 100, 0, 1), ((1,), 50, 2, 3), ((2,), 20, 1, 2)]
    assert max(b.end for b in place_greedy(overlap)) == 120


def test_greedy_ties_place_the_later_tensor_first() -> None:
    # Current TFLM fills its sort array from the tail, so equal sizes come out in reverse order.
    placed = {b.tensors[0]: b.offset for b in place_greedy([((0,), 32, 0, 1), ((1,), 32, 0, 1)])}
    assert placed == {1: 0, 0: 32}


def _chain(sizes: list[int], kinds: list[Kind]) -> Graph:
    """A chain t0 → op0 → t1 → op1 → ... of the given tensor sizes (bytes); LINEAR ops are 3×3 convs."""
    tensors = tuple(Tensor(f"t{i}", (size,), "int8", size, False) for i, size in enumerate(sizes))
    ops = tuple(
        Op(i, kind.value, kind, (i,), (i + 1,), Linear(1, 1, 9, 1, False) if kind is Kind.LINEAR else None)
        for i, kind in enumerate(kinds)
    )
    return Graph("tflite", tensors, ops, (0,), (len(sizes) - 1,))


def test_reshape_aliases_and_pad_folds_into_a_windowed_reader() -> None:
    # t0 160 → elementwise → t1 160 → reshape → t2 160 → pad → t3 250 → conv 3×3 → t4 160
    graph = _chain([160, 160, 160, 250, 160], [Kind.ELEMENTWISE, Kind.ALIAS, Kind.PAD, Kind.LINEAR])
    in_place = plan_arena(graph)
    # t1, t2, t3 share one buffer of 160 (t3 is read with virtual padding by the conv): 160 + 160.
    assert in_place.lower_bound_bytes == in_place.arena_bytes == 320
    assert sorted(len(b.tensors) for b in in_place.buffers) == [1, 1, 3]
    # Without aliasing: the pad step holds t2 160 + t3 256 (250 aligned up to 16): 416.
    separate = plan_arena(graph, in_place=False)
    assert separate.lower_bound_bytes == separate.arena_bytes == 416


def test_pad_with_a_non_windowed_reader_is_in_place_at_padded_size() -> None:
    graph = _chain([160, 160, 250, 160], [Kind.ELEMENTWISE, Kind.PAD, Kind.ELEMENTWISE])
    plan = plan_arena(graph)
    # t1 and t2 share a buffer of 256 (the padded size, aligned) from t1's creation: 160 + 256.
    assert plan.lower_bound_bytes == plan.arena_bytes == 416


def test_lifetimes_outputs_variables_and_precomputed_live_throughout() -> None:
    tensors = (
        Tensor("in", (16,), "int8", 16, False),
        Tensor("state", (32,), "int8", 32, False),  # read, never produced: a variable
        Tensor("w", (64,), "int8", 64, True),
        Tensor("w_f32", (64,), "float32", 256, False),  # computed from a constant only
        Tensor("a", (48,), "int8", 48, False),
        Tensor("out", (16,), "int8", 16, False),
    )
    ops = (
        Op(0, "DEQUANTIZE", Kind.CONVERT, (2,), (3,)),
        Op(1, "ADD", Kind.ELEMENTWISE, (0, 1), (4,)),
        Op(2, "MUL", Kind.ELEMENTWISE, (4, 3), (5,)),
    )
    plan = plan_arena(Graph("tflite", tensors, ops, (0,), (5,)))
    spans = {tensor: (b.first, b.last) for b in plan.buffers for tensor in b.tensors}
    assert spans == {0: (0, 2), 1: (0, 3), 3: (0, 3), 4: (2, 3), 5: (3, 3)}
    assert 2 not in spans  # constants are not in the arena


def test_a_reshaped_constant_takes_no_arena() -> None:
    tensors = (
        Tensor("x", (64,), "int8", 64, False),
        Tensor("w", (64,), "int8", 64, True),
        Tensor("w_view", (8, 8), "int8", 64, False),
        Tensor("y", (64,), "int8", 64, False),
    )
    ops = (Op(0, "RESHAPE", Kind.ALIAS, (1,), (2,)), Op(1, "ADD", Kind.ELEMENTWISE, (0, 2), (3,)))
    graph = Graph("onnx", tensors, ops, (0,), (3,))
    assert plan_arena(graph).arena_bytes == 64 + 64  # x and y only
    assert plan_arena(graph, in_place=False).arena_bytes == 64 * 3  # the view is a real tensor in TFLM


def test_random_graphs_never_overlap_and_respect_the_bound() -> None:
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(3, 30)
        sizes = [rng.randint(1, 5000) for _ in range(n + 1)]
        tensors = tuple(Tensor(f"t{i}", (s,), "int8", s, False) for i, s in enumerate(sizes))
        ops = tuple(
            Op(i, "ADD", Kind.ELEMENTWISE, tuple(sorted({i, rng.randint(0, i)})), (i + 1,)) for i in range(n)
        )
        plan = plan_arena(Graph("tflite", tensors, ops, (0,), (n,)))
        assert plan.arena_bytes >= plan.lower_bound_bytes
        assert all(b.size % 16 == 0 for b in plan.buffers)
        for a in plan.buffers:
            for b in plan.buffers:
                if a is not b and a.overlaps(b.first, b.last):
                    assert a.end <= b.offset or b.end <= a.offset, (a, b)


def test_buffer_overlap_is_inclusive() -> None:
    buffer = Buffer((0,), 16, 2, 4, 0)
    assert buffer.overlaps(4, 6) and buffer.overlaps(0, 2) and not buffer.overlaps(5, 9)


def test_all_targets_are_judged(onnx_files: dict[str, Path]) -> None:
    doc = to_json(estimate(onnx_files["qdq"]), select_targets(None))
    assert set(doc["targets"]) == {"stm32n6", "stm32h7", "stm32mp2", "imx93"}
    assert all(verdict["fits"] for verdict in doc["targets"].values())  # a 164-byte model fits anywhere
