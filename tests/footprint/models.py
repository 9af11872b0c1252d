"""Tiny models the footprint tests build themselves, each with hand-computed expected figures.

Nothing is downloaded: TFLite models come from small Keras graphs through TensorFlow's own
converter, ONNX models are written node by node with ``onnx.helper``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

KerasBody = Callable[..., object]


def keras_tflite(body: KerasBody, shape: tuple[int, ...], *, mode: str = "int8", seed: int = 0) -> bytes:
    """Convert ``body(keras_input)`` to TFLite: ``int8`` (full integer, int8 I/O), ``float16`` or ``float32``."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input(shape, batch_size=1)
    converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, body(inp)))
    if mode == "int8":
        rng = np.random.default_rng(seed)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.random((1, *shape), np.float32)] for _ in range(4))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


# -- the hand-counted int8 TFLite model -------------------------------------------------------
UNIT_SHAPE = (8, 8, 3)
UNIT_OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]


def unit_body(x):  # type: ignore[no-untyped-def]
    """8×8×3 → conv 3×3×4 (relu) → depthwise 3×3 → add → max pool 2 → flatten → dense 5."""
    import tensorflow as tf

    layers = tf.keras.layers
    bias = "random_normal"  # zero biases would be shared, or dropped, by the converter
    a = layers.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=bias)(x)
    b = layers.DepthwiseConv2D(3, padding="same", bias_initializer=bias)(a)
    c = layers.Add()([a, b])
    d = layers.MaxPooling2D(2)(c)
    return layers.Dense(5, bias_initializer=bias)(layers.Flatten()(d))


# -- the hand-counted ONNX models -------------------------------------------------------------
def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _onnx_model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], batch: int | str = 1) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "footprint_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def float_onnx(extra_op: str | None = None, batch: int | str = 1) -> onnx.ModelProto:
    """input [b,3,8,8] → Conv 3×3×4 (pad 1, bias) → Relu → GlobalAveragePool → Flatten → Gemm 5.

    ``extra_op`` appends a shape-preserving op of that type (e.g. an op the estimator does not know).
    """
    rng = np.random.default_rng(0)
    tail = "gemm" if extra_op else "output"
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "g", "gb"], [tail], transB=1),
    ]
    if extra_op:
        nodes.append(helper.make_node(extra_op, [tail], ["output"]))
    inits = [
        _init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        _init("b", rng.standard_normal(4).astype(np.float32)),
        _init("g", rng.standard_normal((5, 4)).astype(np.float32)),
        _init("gb", rng.standard_normal(5).astype(np.float32)),
    ]
    return _onnx_model(nodes, inits, batch)


def qdq_onnx() -> onnx.ModelProto:
    """The float model in QDQ form, as ONNX Runtime's static quantizer writes it.

    Activations: one shared per-tensor (scale float32, zero point int8) pair. Conv weights and
    bias per channel (4 scales each; bias zero points int32); Gemm weights and bias per tensor.
    """
    rng = np.random.default_rng(0)

    def qdq(src: str, dst: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node("QuantizeLinear", [src, "a_scale", "a_zp"], [f"{src}_q"]),
            helper.make_node("DequantizeLinear", [f"{src}_q", "a_scale", "a_zp"], [dst]),
        ]

    nodes = [
        *qdq("input", "input_d"),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["w_d"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zp"], ["b_d"], axis=0),
        helper.make_node("Conv", ["input_d", "w_d", "b_d"], ["c"], pads=[1, 1, 1, 1]),
        *qdq("c", "c_d"),
        helper.make_node("Relu", ["c_d"], ["r"]),
        *qdq("r", "r_d"),
        helper.make_node("GlobalAveragePool", ["r_d"], ["p"]),
        *qdq("p", "p_d"),
        helper.make_node("Flatten", ["p_d"], ["f"]),
        *qdq("f", "f_d"),
        helper.make_node("DequantizeLinear", ["g", "g_scale", "g_zp"], ["g_d"]),
        helper.make_node("DequantizeLinear", ["gb", "gb_scale", "gb_zp"], ["gb_d"]),
        helper.make_node("Gemm", ["f_d", "g_d", "gb_d"], ["y"], transB=1),
        *qdq("y", "output"),
    ]
    inits = [
        _init("a_scale", np.array(0.05, np.float32)),
        _init("a_zp", np.array(0, np.int8)),
        _init("w", rng.integers(-127, 127, (4, 3, 3, 3)).astype(np.int8)),
        _init("w_scale", np.full(4, 0.01, np.float32)),
        _init("w_zp", np.zeros(4, np.int8)),
        _init("b", rng.integers(-1000, 1000, 4).astype(np.int32)),
        _init("b_scale", np.full(4, 0.0005, np.float32)),
        _init("b_zp", np.zeros(4, np.int32)),
        _init("g", rng.integers(-127, 127, (5, 4)).astype(np.int8)),
        _init("g_scale", np.array(0.01, np.float32)),
        _init("g_zp", np.array(0, np.int8)),
        _init("gb", rng.integers(-1000, 1000, 5).astype(np.int32)),
        _init("gb_scale", np.array(0.0005, np.float32)),
        _init("gb_zp", np.array(0, np.int32)),
    ]
    return _onnx_model(nodes, inits)
