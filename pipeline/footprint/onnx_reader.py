"""Read an ONNX model (float or QDQ) into :class:`~.ir.Graph`, as the int8 graph a runtime deploys.

A QDQ model stores int8 weights behind DequantizeLinear and marks int8 activations with
QuantizeLinear→DequantizeLinear pairs around float ops. Deployment runtimes (ONNX Runtime's QDQ
fusion, ST Edge AI, the TFLite converter) fuse those pairs into integer ops, so this reader does
the same before anything is counted:

* DequantizeLinear of a constant is the weight itself: the int8/int32 initializer is the weight,
  its scale and zero point go to :class:`~.ir.QuantParams`.
* QuantizeLinear whose input comes straight from a compute op (and nowhere else) is absorbed: that
  op's output is *stored* in the quantized dtype.
* DequantizeLinear whose output feeds compute ops only is absorbed: they read the integer tensor.
* Every other QuantizeLinear/DequantizeLinear (a float graph input being quantized, a float graph
  output being produced, a requantization) stays a real convert op.

Shapes come from ONNX shape inference; a symbolic dimension (a dynamic batch) is taken as 1 and
said so in the notes. Nothing is executed.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import TensorProto

from pipeline.errors import PosezooError
from pipeline.footprint.ir import Graph, Kind, Linear, Op, QuantParams, Tensor, dtype_bytes
from pipeline.onnx_graph import OnnxGraph

_DTYPES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.DOUBLE: "float64",
    TensorProto.INT4: "int4",
    TensorProto.UINT4: "uint4",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT16: "int16",
    TensorProto.UINT16: "uint16",
    TensorProto.INT32: "int32",
    TensorProto.UINT32: "uint32",
    TensorProto.INT64: "int64",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
}

#: ONNX op type -> kind (default domain). Anything else, e.g. com.microsoft QLinear* ops, is UNKNOWN.
KINDS: dict[str, Kind] = {
    **dict.fromkeys(("Conv", "ConvTranspose", "Gemm"), Kind.LINEAR),  # MatMul: decided per node
    **dict.fromkeys(
        (
            "Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Pow", "Sigmoid", "Tanh", "Relu",
            "LeakyRelu", "PRelu", "HardSwish", "HardSigmoid", "Elu", "Selu", "Gelu", "Erf", "Exp",
            "Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Floor", "Ceil", "Round", "Sign", "Cast",
            "Clip", "Softplus", "Mish", "Sin", "Cos", "Less", "LessOrEqual", "Greater",
            "GreaterOrEqual", "Equal", "And", "Or", "Not", "Where",
        ),
        Kind.ELEMENTWISE,
    ),
    **dict.fromkeys(("QuantizeLinear", "DequantizeLinear"), Kind.CONVERT),
    **dict.fromkeys(
        (
            "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum",
            "ReduceMax", "ReduceMin", "ReduceProd", "ArgMax", "ArgMin",
        ),
        Kind.REDUCE,
    ),
    "MaxPool": Kind.MAX_POOL,
    **dict.fromkeys(("Softmax", "LogSoftmax"), Kind.SOFTMAX),
    **dict.fromkeys(("Resize", "Upsample"), Kind.RESIZE),
    "BatchNormalization": Kind.BATCH_NORM,
    **dict.fromkeys(
        (
            "Concat", "Split", "Slice", "Transpose", "Gather", "GatherElements", "GatherND", "Tile",
            "SpaceToDepth", "DepthToSpace", "Expand", "Shape",
        ),
        Kind.MOVE,
    ),
    **dict.fromkeys(("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"), Kind.ALIAS),
    "Pad": Kind.PAD,
}

_QDQ = ("QuantizeLinear", "DequantizeLinear")
#: Input elements read per output element, per resized dimension, by each Resize mode.
_RESIZE_TAPS_PER_DIM = {"nearest": 1, "linear": 2, "cubic": 4}


def parse_onnx(data: bytes) -> onnx.ModelProto | None:
    """``data`` as an ONNX model, or None if it is not one (protobuf has no magic number)."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # DecodeError; its class depends on the protobuf backend in use
        return None
    return model if model.HasField("graph") and len(model.graph.node) > 0 else None


def read_onnx(path: Path, model: onnx.ModelProto) -> Graph:
    """Build the deployed graph of ``model`` (loaded from ``path``)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as err:  # onnx.shape_inference.InferenceError and checker errors
        raise PosezooError(
            f"{path}: ONNX shape inference failed ({err}); check it with onnx.checker or re-export it"
        ) from err
    return _Builder(path, inferred.graph).build()


class _Builder:
    """One pass over an ONNX graph: fold QDQ, then emit tensors and ops of the common IR."""

    def __init__(self, path: Path, graph: onnx.GraphProto) -> None:
        self.path = path
        self.graph = graph
        self.notes: list[str] = []
        self.symbols: set[str] = set()  # symbolic dimensions already noted
        self.constants: dict[str, tuple[str, tuple[int, ...]]] = {}
        for init in graph.initializer:
            self.constants[init.name] = (self._dtype(init.data_type, init.name), tuple(init.dims))
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = self._constant_node(node)
        self.value_types: dict[str, tuple[int, tuple[int, ...]]] = {}
        for value in (*graph.input, *graph.value_info, *graph.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                tensor_type = value.type.tensor_type
                self.value_types[value.name] = (tensor_type.elem_type, self._dims(value.name, tensor_type.shape))
        self.index = OnnxGraph(graph)
        self.rename: dict[str, str] = {}
        self.stored_dtype: dict[str, str] = {}

    # -- QDQ folding -----------------------------------------------------------------------
    def _resolve(self, name: str) -> str:
        while name in self.rename:
            name = self.rename[name]
        return name

    def _absorbed_quantize(self, node: onnx.NodeProto) -> bool:
        source = node.input[0]
        producer = self.index.producer_node(source)
        return (
            producer is not None
            and producer.op_type not in (*_QDQ, "Constant")
            and len(self.index.consumers[source]) == 1
            and source not in self.index.outputs
        )

    def _absorbed_dequantize(self, node: onnx.NodeProto) -> bool:
        output = node.output[0]
        return output not in self.index.outputs and all(c.op_type not in _QDQ for c in self.index.consumer_nodes(output))

    def _fold(self) -> tuple[list[onnx.NodeProto], set[str]]:
        """Nodes left once QDQ is folded, and the names of the scale/zero-point constants."""
        kept: list[onnx.NodeProto] = []
        quant_names: set[str] = set()
        for node in self.graph.node:
            if node.op_type == "Constant":
                continue
            if node.op_type in _QDQ:
                quant_names.update(name for name in node.input[1:] if name in self.constants)
                if node.op_type == "DequantizeLinear" and (
                    node.input[0] in self.constants or self._absorbed_dequantize(node)
                ):
                    self.rename[node.output[0]] = node.input[0]
                    continue
                if node.op_type == "QuantizeLinear" and self._absorbed_quantize(node):
                    self.rename[node.output[0]] = node.input[0]
                    self.stored_dtype[self._resolve(node.input[0])] = self._elem_dtype(node.output[0])
                    continue
            kept.append(node)
        return kept, quant_names

    # -- IR construction -------------------------------------------------------------------
    def build(self) -> Graph:
        kept, quant_names = self._fold()
        index: dict[str, int] = {}
        tensors: list[Tensor] = []

        def tensor_id(raw_name: str) -> int:
            name = self._resolve(raw_name)
            if name not in index:
                index[name] = len(tensors)
                tensors.append(self._tensor(name))
            return index[name]

        initializer_names = {init.name for init in self.graph.initializer}
        inputs = tuple(tensor_id(v.name) for v in self.graph.input if v.name not in initializer_names)
        ops: list[Op] = []
        for node in kept:
            # A kept Q/DQ reads only its data input: its scale and zero point are QuantParams.
            data_inputs = node.input[:1] if node.op_type in _QDQ else node.input
            op_inputs = tuple(tensor_id(name) for name in data_inputs if name)
            op_outputs = tuple(tensor_id(name) for name in node.output if name)
            ops.append(self._op(len(ops), node, op_inputs, op_outputs, tensors))
        outputs = tuple(tensor_id(v.name) for v in self.graph.output)
        return Graph(
            format="onnx",
            tensors=tuple(tensors),
            ops=tuple(ops),
            inputs=inputs,
            outputs=outputs,
            quant=self._quant_params(quant_names),
            notes=tuple(self.notes),
        )

    def _quant_params(self, names: set[str]) -> QuantParams:
        nbytes = scales = per_channel = 0
        for name in names:
            dtype, shape = self.constants[name]
            nbytes += dtype_bytes(dtype, math.prod(shape))
            if dtype.startswith(("float", "bfloat")):  # a scale (zero points are integers)
                scales += math.prod(shape)
                per_channel += math.prod(shape) > 1
        return QuantParams(nbytes=nbytes, scales=scales, per_channel_tensors=per_channel)

    def _tensor(self, name: str) -> Tensor:
        if name in self.constants:
            dtype, shape = self.constants[name]
            return Tensor(name, shape, dtype, dtype_bytes(dtype, math.prod(shape)), True, storage=name)
        if name not in self.value_types:
            raise PosezooError(
                f"{self.path}: tensor {name!r} has no inferred shape; export the model with static "
                "input shapes (or simplify it with onnxsim) and retry"
            )
        elem_type, shape = self.value_types[name]
        dtype = self.stored_dtype.get(name) or self._dtype(elem_type, name)
        return Tensor(name, shape, dtype, dtype_bytes(dtype, math.prod(shape)), False)

    def _elem_dtype(self, name: str) -> str:
        elem_type, _ = self.value_types.get(name, (TensorProto.INT8, ()))
        return self._dtype(elem_type, name)

    def _dtype(self, elem_type: int, name: str) -> str:
        if elem_type not in _DTYPES:
            raise PosezooError(
                f"{self.path}: tensor {name!r} has dtype {TensorProto.DataType.Name(elem_type)}, "
                "which the footprint estimator cannot size; export it with a numeric dtype"
            )
        return _DTYPES[elem_type]

    def _dims(self, name: str, shape: onnx.TensorShapeProto) -> tuple[int, ...]:
        dims = []
        for dim in shape.dim:
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            else:
                dims.append(1)
                symbol = dim.dim_param or "?"
                if symbol not in self.symbols:
                    self.symbols.add(symbol)
                    self.notes.append(f"symbolic dimension {symbol!r} (first seen on {name!r}) taken as 1")
        return tuple(dims)

    def _constant_node(self, node: onnx.NodeProto) -> tuple[str, tuple[int, ...]]:
        attr = node.attribute[0]
        if attr.name == "value":
            return self._dtype(attr.t.data_type, node.output[0]), tuple(attr.t.dims)
        scalar_or_list = {
            "value_float": ("float32", ()),
            "value_int": ("int64", ()),
            "value_floats": ("float32", (len(attr.floats),)),
            "value_ints": ("int64", (len(attr.ints),)),
        }
        if attr.name not in scalar_or_list:
            raise PosezooError(
                f"{self.path}: Constant {node.output[0]!r} uses attribute {attr.name!r}, which the "
                "footprint estimator cannot size; fold it with onnxsim and retry"
            )
        return scalar_or_list[attr.name]

    def _op(
        self, index: int, node: onnx.NodeProto, inputs: tuple[int, ...], outputs: tuple[int, ...],
        tensors: list[Tensor],
    ) -> Op:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kind = KINDS.get(node.op_type, Kind.UNKNOWN) if node.domain in ("", "ai.onnx") else Kind.UNKNOWN
        shape_in = tensors[inputs[0]].shape if inputs else ()
        shape_out = tensors[outputs[0]].shape if outputs else ()
        linear = None
        op_attrs: dict[str, int] = {}
        if node.op_type == "MatMul":
            b = tensors[inputs[1]]
            if b.is_constant:  # activations × constant matrix [..., K, N]: a fully connected layer
                kind = Kind.LINEAR
                linear = Linear(math.prod(shape_out) // b.shape[-1], b.shape[-1], 1, b.shape[-2], False)
            else:
                kind = Kind.BATCH_MATMUL
                op_attrs["reduce"] = shape_in[-1]
        elif kind is Kind.LINEAR:
            linear = self._linear(node, attrs, [tensors[i].shape for i in inputs], shape_out)
        elif kind is Kind.MAX_POOL:
            op_attrs["window"] = math.prod(attrs["kernel_shape"])
        elif kind is Kind.RESIZE:
            mode = attrs.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            resized = sum(a != b for a, b in zip(shape_in, shape_out))
            taps = _RESIZE_TAPS_PER_DIM.get(mode, 1) ** resized
            op_attrs["taps"] = 0 if taps == 1 else taps  # nearest (or no resize) is a copy
        return Op(index, node.op_type, kind, inputs, outputs, linear, op_attrs)

    @staticmethod
    def _linear(
        node: onnx.NodeProto, attrs: dict[str, object], shapes: list[tuple[int, ...]], out: tuple[int, ...]
    ) -> Linear:
        """Weight geometry from the ONNX layouts (NCHW activations)."""
        has_bias = len(node.input) > 2 and bool(node.input[2])
        w = shapes[1]
        group = int(attrs.get("group", 1))  # type: ignore[call-overload]
        if node.op_type == "Conv":  # W [Co, Ci/group, k...], out [N, Co, spatial...]
            return Linear(out[0] * math.prod(out[2:]), w[0], math.prod(w[2:]), w[1], has_bias)
        if node.op_type == "ConvTranspose":  # W [Ci, Co/group, k...]: kernel applied per input pixel
            x = shapes[0]
            return Linear(x[0] * math.prod(x[2:]), w[1] * group, math.prod(w[2:]), w[0] // group, has_bias)
        # Gemm: A [M, K] (transA: [K, M]), B [K, N] (transB: [N, K])
        k = shapes[0][0] if attrs.get("transA", 0) else shapes[0][1]
        n = w[0] if attrs.get("transB", 0) else w[1]
        return Linear(math.prod(out) // n, n, 1, k, has_bias)
