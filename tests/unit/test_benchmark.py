"""Host latency benchmark: timing statistics, every runtime on tiny models, the exact U8S8 rewrite, the stage."""

from __future__ import annotations

import json
import shutil
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.benchmark import latency, runtimes
from pipeline.benchmark.latency import Timing, benchmark_file, time_runs
from pipeline.benchmark.u8s8 import int8_activation_quantizers, to_u8s8
from pipeline.cli import main
from pipeline.errors import PosezooError

from tests.conftest import TINY_SIZE

RUNS, WARMUP = 4, 2


def build_float_onnx(path: Path, seed: int = 0) -> Path:
    """A 16×16 NCHW conv net (conv-relu, depthwise conv-relu, pool, dense) with 4 outputs."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
        helper.make_node("GlobalAveragePool", ["c3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["y"], transB=1),
    ]
    inits = [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 1, 3, 3), weight("b2", 8),
             weight("w3", 16, 8, 1, 1), weight("b3", 16), weight("w4", 4, 16), weight("b4", 4)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_qdq_onnx(float_path: Path, path: Path) -> Path:
    """The S8S8 QDQ export of ``float_path`` with the pipeline's quantize_static settings
    (pipeline/quantize/onnx.py: QDQ, per-channel int8 weights, int8 activations, MinMax)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.samples = iter([{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.samples, None)

    quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return path


def build_int8_tflite(path: Path) -> Path:
    """A full-int8 TFLite (int8 input and output) of a tiny Keras conv net."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((TINY_SIZE, TINY_SIZE, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(4)(x))
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.random((1, TINY_SIZE, TINY_SIZE, 3), dtype=np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


def build_ir(onnx_path: Path, path: Path) -> Path:
    """The OpenVINO IR (.xml + .bin) of an ONNX model."""
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench")
    float_onnx = build_float_onnx(folder / "float.onnx")
    return {
        "float_tflite": tiny_model,
        "int8_tflite": build_int8_tflite(folder / "int8.tflite"),
        "float_onnx": float_onnx,
        "qdq_onnx": build_qdq_onnx(float_onnx, folder / "qdq.onnx"),
        "ir": build_ir(float_onnx, folder / "ir" / "tiny.xml"),
    }


def test_time_runs_excludes_warmup_and_reports_linear_p90() -> None:
    calls = {"step": 0, "clock": 0}
    durations_ms = [5, 1, 9, 3, 7, 2, 10, 4, 8, 6]  # one per timed run
    ticks = iter(t for d in durations_ms for t in (0, d * 1_000_000))

    def step() -> None:
        calls["step"] += 1

    def clock() -> int:
        calls["clock"] += 1
        return next(ticks)

    timing = time_runs(step, runs=10, warmup=3, clock=clock)
    assert calls == {"step": 13, "clock": 20}  # warm-up runs are run but never timed
    assert timing == Timing(median_ms=5.5, p90_ms=9.1, min_ms=1.0, runs=10)
    with pytest.raises(ValueError):
        time_runs(step, runs=0, warmup=0)


EXPECTED = {
    "float_tflite": ["tflite", "openvino"],
    "int8_tflite": ["tflite", "openvino"],
    "float_onnx": ["onnxruntime", "openvino"],
    "qdq_onnx": ["onnxruntime_qdq", "onnxruntime_u8s8", "openvino"],
    "ir": ["openvino_ir"],
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_every_applicable_runtime_is_timed(models: dict[str, Path], kind: str) -> None:
    entries = benchmark_file(models[kind], runs=RUNS, warmup=WARMUP, threads=1)
    assert list(entries) == EXPECTED[kind]
    for runtime_id, entry in entries.items():
        assert "error" not in entry, f"{runtime_id}: {entry.get('error')}"
        assert entry["file"] == models[kind].name and entry["runs"] == RUNS
        assert 0 < entry["min_ms"] <= entry["median_ms"] <= entry["p90_ms"]
        assert entry["versions"].split()[0] in {"ai-edge-litert", "tensorflow", "onnxruntime", "openvino"}


def test_each_timed_run_is_one_inference(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The step the timer calls is exactly one inference: count them through the runtime."""
    counted = {"n": 0}
    real = runtimes.prepare_onnxruntime

    def counting(*args: Any) -> runtimes.Prepared:
        prepared = real(*args)

        def step() -> Any:
            counted["n"] += 1
            return prepared.step()

        return runtimes.Prepared(step, prepared.versions)

    monkeypatch.setattr(runtimes, "prepare_onnxruntime", counting)
    ticks = iter(range(0, 10**9, 1000))
    entries = benchmark_file(models["float_onnx"], runs=RUNS, warmup=WARMUP, threads=1, skip=frozenset({"openvino"}), clock=lambda: next(ticks))
    assert list(entries) == ["onnxruntime"]
    assert counted["n"] == RUNS + WARMUP
    assert entries["onnxruntime"]["median_ms"] == 0.001  # 1000 ns per timed run from the fake clock


def _outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_u8s8_rewrite_is_exact(models: dict[str, Path]) -> None:
    s8 = onnx.load(str(models["qdq_onnx"]))
    u8 = to_u8s8(s8)
    onnx.checker.check_model(u8)
    inits = {i.name: i for i in u8.graph.initializer}
    zero_points: dict[str, set[int]] = {"Q": set(), "DQ activation": set(), "DQ weight": set()}
    for node in u8.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and inits[node.input[2]].data_type != TensorProto.INT32:  # not biases
            kind = "Q" if node.op_type == "QuantizeLinear" else "DQ weight" if node.input[0] in inits else "DQ activation"
            zero_points[kind].add(inits[node.input[2]].data_type)
    assert zero_points == {"Q": {TensorProto.UINT8}, "DQ activation": {TensorProto.UINT8}, "DQ weight": {TensorProto.INT8}}
    assert int8_activation_quantizers(s8) and not int8_activation_quantizers(u8)
    assert len(s8.graph.node) == len(u8.graph.node)

    # The rewrite without the +128 shift would change the outputs: the comparison can fail.
    wrong = to_u8s8(s8)
    for init in wrong.graph.initializer:
        if init.data_type == TensorProto.UINT8:
            init.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(init).astype(np.int16) - 128).astype(np.uint8), init.name))
    rng = np.random.default_rng(3)
    differs = False
    for _ in range(5):
        feeds = {"x": (rng.random((1, 3, 16, 16), dtype=np.float32) * 2 - 0.5)}
        ref = _outputs(s8, feeds)
        for a, b in zip(ref, _outputs(u8, feeds)):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        differs |= any(not np.allclose(a, b, atol=1e-3) for a, b in zip(ref, _outputs(wrong, feeds)))
    assert differs


def test_float_model_has_nothing_to_rewrite(models: dict[str, Path]) -> None:
    model = onnx.load(str(models["float_onnx"]))
    assert not int8_activation_quantizers(model)
    assert to_u8s8(model).SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("name", ["bad.onnx", "bad.tflite", "bad.xml", "cut.onnx", "cut.tflite"])
def test_bad_file_is_a_one_line_error(tmp_path: Path, models: dict[str, Path], name: str) -> None:
    bad = tmp_path / name
    if name.startswith("cut"):  # truncated real model (a truncated flatbuffer can crash LiteRT: checked first)
        data = models["qdq_onnx" if name.endswith(".onnx") else "float_tflite"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(b"definitely not a model\n" * 4)
    with pytest.raises(PosezooError, match=re.escape(f"{name}: ")) as err:
        benchmark_file(bad, runs=2, warmup=0, threads=1)
    assert "\n" not in str(err.value)
    with pytest.raises(PosezooError, match=r"model\.pb: cannot benchmark a '\.pb' file"):
        benchmark_file(tmp_path / "model.pb", runs=2, warmup=0, threads=1)


def test_a_failing_secondary_runtime_is_recorded(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Path, threads: int) -> runtimes.Prepared:
        raise RuntimeError("Exception from src/plugin.cpp:54:\nCannot compile int8 TFLite\n")

    monkeypatch.setattr(runtimes, "prepare_openvino", broken)
    entries = benchmark_file(models["int8_tflite"], runs=2, warmup=0, threads=1)
    assert entries["openvino"] == {"file": "int8.tflite", "error": "RuntimeError: Cannot compile int8 TFLite"}
    assert latency.fastest(entries) == "tflite"


@pytest.mark.usefixtures("tiny_env")
def test_cli_writes_the_agreed_schema(tmp_path: Path, models: dict[str, Path]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"models: {{tiny_landmarks: {{}}}}\nbenchmark: {{runs: {RUNS}, warmup: 1, threads: 1}}\n")
    out = tmp_path / "metrics" / "tiny-float.json"
    # The float source is timed from the fetch output directory (the tiny entry's source is a float TFLite).
    fetched = tmp_path / "source"
    fetched.mkdir()
    shutil.copy(models["float_tflite"], fetched / "model.tflite")
    code = main(["benchmark", str(models["float_onnx"]), "--float-source", str(fetched), "--model", "tiny_landmarks",
                 "--key", "tiny-float", "--params", str(params), "--out", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"model", "key", "files", "host", "runtimes", "fastest"}
    assert (doc["model"], doc["key"], doc["files"]) == ("tiny_landmarks", "tiny-float", ["float.onnx", "model.tflite"])
    assert set(doc["host"]) == {"cpu", "cores", "threads", "batch", "runs", "warmup", "note"}
    assert (doc["host"]["threads"], doc["host"]["batch"], doc["host"]["runs"], doc["host"]["warmup"]) == (1, 1, RUNS, 1)
    assert doc["host"]["note"] == "host CPU latency, not on-target" and doc["host"]["cores"] >= 1 and doc["host"]["cpu"]
    assert set(doc["runtimes"]) == {"onnxruntime", "openvino", "tflite"}
    assert doc["runtimes"]["openvino"]["file"] == "float.onnx"  # the first file given
    for entry in doc["runtimes"].values():
        assert set(entry) == {"file", "median_ms", "p90_ms", "min_ms", "runs", "versions"}
    assert doc["fastest"] == min(doc["runtimes"], key=lambda r: doc["runtimes"][r]["median_ms"])

    # A stage directory (here an OpenVINO IR: .xml + .bin) is resolved to its one model file.
    assert main(["benchmark", str(models["ir"].parent), "--model", "tiny_landmarks", "--key", "tiny-ir", "--params", str(params), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert (doc["files"], list(doc["runtimes"]), doc["fastest"]) == (["tiny.xml"], ["openvino_ir"], "openvino_ir")


@pytest.mark.usefixtures("tiny_env")
def test_cli_rejects_bad_params(tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("models: {tiny_landmarks: {}}\nbenchmark: {runs: 0, warmup: 1, threads: 1}\n")
    code = main(["benchmark", str(models["float_onnx"]), "--model", "tiny_landmarks", "--key", "k", "--params", str(params), "--out", str(tmp_path / "o.json")])
    assert code == 2 and not (tmp_path / "o.json").exists()
    assert "benchmark.runs is 0; it must be an integer >= 1" in capsys.readouterr().err
