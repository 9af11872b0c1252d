"""ONNX graph helpers shared by the float-model transforms in :mod:`pipeline.optimize`.

The transforms edit initializers of the float model in place and read intermediate tensors on
calibration images; onnxruntime runs single-threaded so that statistics (hence the written
bytes) are reproducible run to run.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from pipeline.calibration.reader import iter_inputs
from pipeline.convert.runners import onnx_input_layout, ort_session
from pipeline.errors import PosezooError
from pipeline.onnx_graph import OnnxGraph
from pipeline.registry import InputSpec

#: int8 weights as both exporters store them: symmetric, zero point 0, narrow range [-127, 127],
#: scale = max|w| / 127 (per output channel or per tensor). Checked on this pipeline's exports:
#: onnxruntime's QDQ quantizer (QInt8 weights are always symmetric; ``get_qmin_qmax_for_qType``
#: returns ±127) and the TFLite converter (Conv, DepthwiseConv and FullyConnected weights span
#: exactly -127..127, one scale per output channel or one per tensor).
INT8_MAX = 127


def fake_quantize(weights: np.ndarray, axis: int | None) -> np.ndarray:
    """``weights`` quantized to int8 and back, per slice along ``axis`` (or per tensor if None).

    Computed in float32 with round-half-to-even, as onnxruntime's ``quantize_nparray`` does: it
    reproduces the per-tensor QDQ weights of hand_landmark_full bit for bit (per channel within
    2e-9). TFLite rounds ties away from zero; MediaPipe's fp16-derived weights do hit exact ties,
    but rarely (hand_landmark_full: 9 of 2.7 M weights per tensor, 914 per channel, one step
    each), which moves a bias correction by a negligible amount. An all-zero slice stays zero.
    """
    w = np.asarray(weights, dtype=np.float32)
    if axis is None:
        absmax = np.max(np.abs(w), keepdims=True)
    else:
        absmax = np.max(np.abs(w), axis=tuple(a for a in range(w.ndim) if a != axis % w.ndim), keepdims=True)
    scale = absmax / np.float32(INT8_MAX)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.round(w / safe), -INT8_MAX, INT8_MAX)
    return (q * safe).astype(np.float32)


def sqnr_db(weights: np.ndarray, axis: int | None, channel_axis: int = 0) -> float:
    """Mean over output channels of each channel's SQNR (dB) under :func:`fake_quantize` (``axis``).

    Averaged per channel, not over the whole tensor: a tensor-wide SQNR is dominated by the
    largest channels and hides the small ones, which are exactly those per-tensor int8 rounds
    to a few levels. Channels without weights or without error are left out (NaN if none remain).
    """
    w = np.moveaxis(np.asarray(weights, dtype=np.float64), channel_axis, 0)
    q = np.moveaxis(fake_quantize(weights, axis).astype(np.float64), channel_axis, 0)
    signal = np.sum(w.reshape(w.shape[0], -1) ** 2, axis=1)
    noise = np.sum((q - w).reshape(w.shape[0], -1) ** 2, axis=1)
    kept = (signal > 0) & (noise > 0)
    return float(np.mean(10.0 * np.log10(signal[kept] / noise[kept]))) if np.any(kept) else float("nan")


def conv_input_channels(weight_shape: tuple[int, ...], group: int) -> np.ndarray:
    """Index of the input channel that weight slice ``[o, j]`` reads, shape (C_out, C_in / group).

    A grouped convolution splits C_in into ``group`` blocks of C_in/group channels and C_out into
    ``group`` blocks; output channel ``o`` belongs to block ``o // (C_out/group)`` and its slice
    ``j`` reads input channel ``block * C_in/group + j``. Depthwise (group = C_in, multiplier m)
    is the case C_in/group = 1: output channels ``i*m .. i*m+m-1`` read input channel ``i``.
    """
    c_out, c_per_group = weight_shape[0], weight_shape[1]
    block = np.arange(c_out) // (c_out // group)
    return block[:, None] * c_per_group + np.arange(c_per_group)[None, :]


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """Value of ``node``'s attribute ``name``, or ``default``."""
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


class Graph(OnnxGraph):
    """The model's producer/consumer index, and its float initializers as editable arrays.

    Arrays are copied out on first access and written back by :meth:`commit`, so a transform can
    work in numpy and leave the proto untouched until it succeeds. The index is kept current for
    the edits made here (:meth:`own_constant`), which are the only ones the transforms make.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__(model.graph)
        self.model = model
        self._arrays: dict[str, np.ndarray] = {}
        inputs = [i.name for i in model.graph.input if i.name not in self.initializers]
        if len(inputs) != 1:
            raise PosezooError(f"model has {len(inputs)} non-constant inputs {inputs}; posezoo models take one image input")
        self.input_name = inputs[0]

    def is_constant(self, name: str) -> bool:
        """True if ``name`` is a float initializer."""
        tensor = self.initializers.get(name)
        return tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT

    def value(self, name: str) -> np.ndarray | None:
        """The value of initializer ``name`` in its own dtype (read-only use), or None if not one."""
        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def array(self, name: str) -> np.ndarray:
        """The (float64, writable) value of initializer ``name``."""
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.initializers[name]).astype(np.float64)
        return self._arrays[name]

    def set_array(self, name: str, value: np.ndarray) -> None:
        """Replace (or create) initializer ``name``; written into the proto by :meth:`commit`."""
        if name not in self.initializers:
            tensor = self.model.graph.initializer.add()
            tensor.name = name
            self.initializers[name] = tensor
        self._arrays[name] = np.asarray(value, dtype=np.float64)

    def fresh_name(self, base: str) -> str:
        """A tensor name not used anywhere in the graph, derived from ``base`` (deterministic)."""
        taken = set(self.initializers) | set(self.producer) | set(self.consumers) | self.outputs
        name, n = base, 0
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        return name

    def own_constant(self, k: int, index: int, fill: np.ndarray) -> str:
        """Name of a float initializer that feeds node ``k`` at input ``index`` and nothing else.

        The existing one if private; else a copy (tf2onnx shares identical initializers such as
        all-zero biases between layers, which a per-layer edit must not touch for the others);
        ``fill`` if the input is absent.
        """
        node = self.nodes[k]
        name = node.input[index] if len(node.input) > index else ""
        if name and len(self.consumers[name]) == 1:
            return name
        own = self.fresh_name(f"{node.output[0]}_in{index}")
        self.set_array(own, (self.array(name) if name else fill).copy())
        if name:
            self.consumers[name].remove(k)
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = own
        self.consumers[own] = [k]
        return own

    def sole_consumer(self, tensor: str) -> int | None:
        """The one node reading ``tensor``, or None if it is a graph output or read by several."""
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def commit(self) -> onnx.ModelProto:
        """Write every touched array back into the model (float32) and return the model."""
        for name, value in self._arrays.items():
            self.initializers[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
        return self.model


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` computing only ``names`` (as its outputs) and the nodes they need."""
    wanted = list(dict.fromkeys(names))
    source = model.graph
    index = OnnxGraph(source)
    needed: set[int] = set()
    stack = list(wanted)
    while stack:
        k = index.producer.get(stack.pop(), -1)
        if k < 0 or k in needed:
            continue
        needed.add(k)
        stack.extend(i for i in index.nodes[k].input if i)
    kept = [node for k, node in enumerate(index.nodes) if k in needed]
    used = {i for node in kept for i in node.input}
    constants = {t.name for t in source.initializer}
    graph = onnx.helper.make_graph(
        kept,
        source.name,
        [i for i in source.input if i.name not in constants or i.name in used],
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in wanted],
        [t for t in source.initializer if t.name in used],
    )
    return onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def session(model: onnx.ModelProto) -> Any:
    """A single-threaded onnxruntime CPU session (reproducible sums) for an in-memory model."""
    return ort_session(model.SerializeToString())


def load_inputs(model_path: Path, manifest: Path, spec: InputSpec, max_samples: int | None) -> list[np.ndarray]:
    """Calibration inputs in the model's own layout, decoded once (the transforms pass over them many times)."""
    samples: Iterator[tuple[str, np.ndarray]] = iter_inputs(manifest, spec, onnx_input_layout(Path(model_path)))
    inputs = [x for _, x in itertools.islice(samples, max_samples)]
    if not inputs:
        raise PosezooError(f"{manifest}: no calibration samples; rerun `posezoo calibrate`")
    return inputs


def run_outputs(model: onnx.ModelProto, input_name: str, names: list[str], inputs: list[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Tensors ``names`` of ``model`` for each input, in input order."""
    sess = session(with_outputs(model, names))
    for x in inputs:
        yield dict(zip(names, sess.run(names, {input_name: x})))


def mean_tensors(model: onnx.ModelProto, input_name: str, names: list[str], inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Element-wise mean (float64) of each tensor in ``names`` over ``inputs``."""
    sums = {n: np.zeros((), dtype=np.float64) for n in names}
    for values in run_outputs(model, input_name, names, inputs):
        for n in names:
            sums[n] = sums[n] + values[n].astype(np.float64)
    return {n: s / len(inputs) for n, s in sums.items()}


def save_bytes(model: onnx.ModelProto) -> bytes:
    """Serialized ``model``, deterministic (same model → same bytes, for DVC)."""
    return model.SerializeToString(deterministic=True)
