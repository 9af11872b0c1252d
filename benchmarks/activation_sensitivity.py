"""Which activation tensors carry a model's 8-bit activation loss: quantize one tensor at a time.

For every activation tensor onnxruntime's QDQ export quantizes (the QuantizeLinear inputs of a
real per-channel export), the float graph gets a fake-quantizer on that tensor gated by a scalar
input: ``y = x + g · (DQ(Q(x)) − x)`` (int8, the export's MinMax or percentile range, weights
float). One session then measures, on validation ROIs, the keypoint drift against float with
**only** that tensor quantized and with **all but** that tensor quantized, and with all of them.
Why by hand: onnxruntime's ``qdq_loss_debug`` compares activations tensor by tensor, which ranks
local error, not the error a tensor causes at the keypoints; AIMET's QuantSim does this but needs
torch. Run after ``make repro`` (reads build/float and calibration/default-roi):
``python benchmarks/activation_sensitivity.py --model pose_landmark_full [--float build/optimized/<key>/model.onnx]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.calibration.reader import iter_inputs  # noqa: E402
from pipeline.convert.runners import onnx_input_layout, ort_session  # noqa: E402
from pipeline.evaluate.decoders import decoder_for  # noqa: E402
from pipeline.optimize.graph import Graph  # noqa: E402
from pipeline.params import load_params, model_for  # noqa: E402
from pipeline.quantize.config import QuantConfig  # noqa: E402
from pipeline.quantize.onnx import quantize_onnx  # noqa: E402
from pipeline.quantize.preprocess import preprocess_onnx  # noqa: E402
from pipeline.quantize.ranges import compute_ranges  # noqa: E402


def gated_model(pre: Path, tensors: list[str], ranges: dict[str, tuple[float, float]]) -> tuple[bytes, list[str]]:
    """The pre-processed float graph with one gated int8 fake-quantizer per tensor; the gate input names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(pre))
    graph = Graph(model)
    added, gates = [], []
    for k, name in enumerate(tensors):
        lo, hi = min(ranges[name][0], 0.0), max(ranges[name][1], 0.0)
        scale = max((hi - lo) / 255.0, 1e-12)
        zero = int(np.clip(round(-128 - lo / scale), -128, 127))
        s, z, g = f"__s{k}", f"__z{k}", f"__g{k}"
        model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), s), numpy_helper.from_array(np.array(zero, np.int8), z)])
        model.graph.input.append(helper.make_tensor_value_info(g, TensorProto.FLOAT, []))
        gates.append(g)
        out = f"{name}__gated"
        for user in graph.consumers.get(name, []):
            node = graph.nodes[user]
            node.input[:] = [out if i == name else i for i in node.input]
        for o in model.graph.output:
            if o.name == name:
                o.name = out
        added += [
            helper.make_node("QuantizeLinear", [name, s, z], [f"{name}__q"]),
            helper.make_node("DequantizeLinear", [f"{name}__q", s, z], [f"{name}__dq"]),
            helper.make_node("Sub", [f"{name}__dq", name], [f"{name}__d"]),
            helper.make_node("Mul", [f"{name}__d", g], [f"{name}__gd"]),
            helper.make_node("Add", [name, f"{name}__gd"], [out]),
        ]
    nodes, ready, pending = [], {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}, list(model.graph.node) + added
    while pending:  # topological order: each fake-quantizer right after its tensor's producer
        now = [n for n in pending if all(i in ready for i in n.input)]
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        for n in now:
            nodes.append(n)
            ready.update(n.output)
        if len(rest) == len(pending):
            raise SystemExit(f"{pre}: could not order the gated graph")
        pending = rest
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model.SerializeToString(), gates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--float", type=Path, help="float ONNX to diagnose (default build/float/<model>/model.onnx)")
    parser.add_argument("--calibration", choices=["minmax", "percentile"], default="minmax")
    parser.add_argument("--samples", type=int, default=10, help="validation ROIs per measurement")
    parser.add_argument("--top", type=int, default=15, help="tensors to print")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    spec, _ = model_for(params, args.model, REPO / "params.yaml")
    root = REPO / "calibration" / "default-roi" / args.model
    float_onnx = args.float or REPO / "build" / "float" / args.model / "model.onnx"
    config = QuantConfig(True, args.calibration)
    table = compute_ranges(float_onnx, root / "calibration.json", spec.input, config)
    with tempfile.TemporaryDirectory(prefix="posezoo-sensitivity-") as tmp:
        import onnx

        pre, qdq = Path(tmp) / "pre.onnx", Path(tmp) / "qdq.onnx"
        preprocess_onnx(float_onnx, pre)
        quantize_onnx(float_onnx, qdq, root / "calibration.json", spec.input, config, ranges=table if config.shared_ranges else None)
        q = onnx.load(str(qdq))
        constants = {i.name for i in q.graph.initializer}
        quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants}
        tensors = [t for t in table.ranges if t in quantized]
        model, gates = gated_model(pre, tensors, table.ranges)
    session = ort_session(model)
    input_name = session.get_inputs()[0].name
    inputs = [x for _, x in iter_inputs(root / "validation.json", spec.input, onnx_input_layout(float_onnx))][: args.samples]
    decode = decoder_for(spec)

    def keypoints(on: np.ndarray) -> np.ndarray:
        feeds = {g: np.array(v, np.float32) for g, v in zip(gates, on)}
        return np.stack([decode(session.run(None, {input_name: x, **feeds}), spec).keypoints[0] for x in inputs])

    reference = keypoints(np.zeros(len(gates)))

    def drift(on: np.ndarray) -> float:
        return float(np.linalg.norm(keypoints(on) - reference, axis=-1).mean())

    everything = drift(np.ones(len(gates)))
    print(f"{args.model}: {len(tensors)} quantized activation tensors ({args.calibration}), {len(inputs)} validation ROIs; all quantized: {everything:.2f} px")
    rows = []
    for k, name in enumerate(tensors):
        only, but = np.zeros(len(gates)), np.ones(len(gates))
        only[k], but[k] = 1, 0
        rows.append((drift(only), drift(but), name, table.ranges[name]))
    print("| tensor | range | drift, only this one int8 (px) | drift, all but this one (px) |\n|---|---|---|---|")
    for alone, rest, name, (lo, hi) in sorted(rows, reverse=True)[: args.top]:
        print(f"| {name} | [{lo:.3g}, {hi:.3g}] | {alone:.2f} | {rest:.2f} |")


if __name__ == "__main__":
    main()
