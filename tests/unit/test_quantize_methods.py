"""Calibration methods, shared activation ranges, 16x8 and per-layer fallback on tiny models."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.convert.onnx_to_savedmodel import onnx_to_savedmodel
from pipeline.convert.tflite_to_onnx import tflite_to_onnx
from pipeline.errors import PosezooError
from pipeline.evaluate.drift import measure_drift
from pipeline.quantize import QuantConfig, quantizable_layers, variant_name
from pipeline.quantize.onnx import quantize_onnx
from pipeline.quantize.ranges import RangeCollector, RangeTable, compute_ranges, mse_range, pinned_calibrators
from pipeline.quantize.tflite import quantize_tflite
from pipeline.registry import load_model

from tests.conftest import TINY_SIZE, photo_manifests

pytestmark = pytest.mark.usefixtures("tiny_env")

OUTLIER = 40.0  # the spike added to one value of the outlier model's second activation


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 12, 6)


def _float_dir(out: Path, tflite_model: Path, manifests: Path) -> Path:
    tflite_to_onnx(tflite_model, out / "model.onnx", opset=17)
    onnx_to_savedmodel(out / "model.onnx", out / "saved_model", manifests / "manifest.json")
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, manifests: Path) -> Path:
    return _float_dir(tmp_path_factory.mktemp("float"), tiny_model, manifests)


@pytest.fixture(scope="module")
def outlier(tmp_path_factory: pytest.TempPathFactory, manifests: Path) -> Path:
    """A tiny conv net with a spike: one value of its second activation is raised by :data:`OUTLIER`."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    spike = np.zeros((1, TINY_SIZE, TINY_SIZE, 32), np.float32)
    spike[0, 5, 9, 3] = OUTLIER  # one value in 32768 per sample; the others stay below ~2
    inp = tf.keras.Input((TINY_SIZE, TINY_SIZE, 3), batch_size=1, name="image")
    x = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    x = x + tf.constant(spike)
    x = tf.keras.layers.Conv2D(8, 1, activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    points = tf.keras.layers.Dense(10, activation="sigmoid")(x) * float(TINY_SIZE)
    score = tf.keras.layers.Dense(1, activation="sigmoid")(x)  # the outputs of tiny_landmarks, so drift can be measured
    model = tf.keras.Model(inp, [points, score])
    out = tmp_path_factory.mktemp("outlier")
    (out / "source.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return _float_dir(out, out / "source.tflite", manifests)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scaled_tensor(float_onnx: Path) -> str:
    """The spike Add's output, named as in the pre-processed ONNX (which the range table uses)."""
    import tempfile

    import onnx

    from pipeline.quantize.preprocess import preprocess_onnx

    with tempfile.TemporaryDirectory() as tmp:
        preprocess_onnx(float_onnx, Path(tmp) / "pre.onnx")
        return next(n.output[0] for n in onnx.load(str(Path(tmp) / "pre.onnx")).graph.node if n.op_type == "Add")


def _onnx_ranges(path: Path) -> dict[str, tuple[float, float]]:
    """Real range [scale * (qmin - zp), scale * (qmax - zp)] of every QuantizeLinear's input tensor."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    ranges = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in inits:
            scale, zp = float(inits[node.input[1]]), inits[node.input[2]]
            info = np.iinfo(zp.dtype)
            ranges[node.input[0]] = (scale * (info.min - int(zp)), scale * (info.max - int(zp)))
    return ranges


def _tflite_ranges(path: Path) -> list[tuple[float, float]]:
    """Real ranges of the integer activation tensors of a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter

    found = []
    for d in Interpreter(model_path=str(path)).get_tensor_details():
        scales, zps = d["quantization_parameters"]["scales"], d["quantization_parameters"]["zero_points"]
        if d["dtype"] in (np.int8, np.int16) and len(scales) == 1:
            info = np.iinfo(d["dtype"])
            found.append((float(scales[0]) * (info.min - int(zps[0])), float(scales[0]) * (info.max - int(zps[0]))))
    return found


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"calibration": "kl"}, "calibration 'kl' is unknown"),
        ({"percentile": 101}, "percentile must be a number in"),
        ({"percentile": "99.9"}, "percentile must be a number in"),
        ({"activation_bits": 4}, "activation_bits must be 8 or 16"),
        ({"activation_bits": True}, "activation_bits must be 8 or 16"),
        ({"float_nodes": "Conv_0"}, "float_nodes must be a list"),
        ({"float_nodes": ["Conv_0", "Conv_0"]}, "names Conv_0 more than once"),
        ({"per_channel": "yes"}, "per_channel must be true or false"),
    ],
)
def test_bad_config_values_are_one_line_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PosezooError, match=message) as err:
        QuantConfig(**{"per_channel": True, **kwargs})
    assert "\n" not in str(err.value)


def test_variant_names_say_what_is_not_default() -> None:
    config = QuantConfig(False, "entropy", 99.99, 16, ("Conv_0",))
    assert variant_name("m", 32, "per_tensor", config) == "m_32_a16w8_pt_entropy_fb1"
    assert variant_name("m", 32, "per_tensor", QuantConfig(False)) == variant_name("m", 32, "per_tensor") == "m_32_int8_pt"


def test_missing_float_onnx_and_16x8_fallback_are_refused(tmp_path: Path, converted: Path, manifests: Path) -> None:
    spec = load_model("tiny_landmarks").input
    with pytest.raises(PosezooError, match="need the float ONNX"):
        quantize_tflite(converted / "saved_model", tmp_path / "m.tflite", manifests / "manifest.json", spec, QuantConfig(True, "mse"))
    with pytest.raises(PosezooError, match="16x8 quantizer cannot keep layers in float"):
        quantize_tflite(converted / "saved_model", tmp_path / "m.tflite", manifests / "manifest.json", spec,
                        QuantConfig(True, activation_bits=16, float_nodes=("Conv_0",)), float_onnx=converted / "model.onnx")
    with pytest.raises(PosezooError, match="16x8 quantizer cannot quantize depthwise-conv weights per-tensor") as err:
        quantize_tflite(converted / "saved_model", tmp_path / "m.tflite", manifests / "manifest.json", spec, QuantConfig(False, activation_bits=16))
    assert "\n" not in str(err.value)
    with pytest.raises(PosezooError, match="float_nodes Nope_3: no such node in this model"):
        quantize_onnx(converted / "model.onnx", tmp_path / "m.onnx", manifests / "manifest.json", spec, QuantConfig(True, float_nodes=("Nope_3",)))
    assert not (tmp_path / "m.tflite").exists() and not (tmp_path / "m.onnx").exists()


def test_range_tables_round_trip_and_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    from pipeline.quantize.ranges import read_ranges, write_ranges

    table = RangeTable("mse", 99.99, 8, {"a": (-0.1, 2.5), "t3": (0.0, 0.30000001192092896)}, {"a": (-0.2, 9.0), "t3": (0.0, 1.0)})
    write_ranges(table, tmp_path / "r.json")
    assert read_ranges(tmp_path / "r.json") == table
    assert table.fits(QuantConfig(True, "mse")) and not table.fits(QuantConfig(True, "mse", activation_bits=16)) and not table.fits(QuantConfig(True, "entropy"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(PosezooError, match=r"bad\.json: not a range table") as err:
        read_ranges(tmp_path / "bad.json")
    assert "\n" not in str(err.value)


# --- range functions ------------------------------------------------------------------------------


def test_every_method_clips_an_outlier_that_minmax_keeps() -> None:
    rng = np.random.default_rng(0)  # 10 activations of 64k values, one of them 60 (the bulk is below 6)
    chunks = [[np.maximum(rng.normal(1.0, 1.0, (1, 64, 64, 16)), 0).astype(np.float32) for _ in range(5)] for _ in range(2)]
    chunks[1][2][0, 3, 3, 3] = 60.0
    found = {}
    for method in ("minmax", "percentile", "entropy", "mse"):
        collector = RangeCollector(method, 99.99, 8)
        for chunk in chunks:
            collector.collect({"t": chunk})
        found[method] = collector.ranges()["t"]
        assert collector.observed()["t"] == (0.0, 60.0)
    assert found["minmax"] == (0.0, 60.0)
    for method in ("percentile", "entropy", "mse"):
        lo, hi = found[method]
        assert lo == 0.0 and 2.0 < hi < 45.0, (method, hi)
    # MSE weighs the outlier's squared clipping error against 655k values' rounding error (~33);
    # the percentile and the KL threshold ignore the lone value.
    assert found["percentile"][1] < 10.0 and found["entropy"][1] < 10.0


def test_grown_histograms_are_rebinned_around_zero() -> None:
    import contextlib
    import io

    from onnxruntime.quantization.calibrate import HistogramCollector

    from pipeline.quantize.ranges import HIST_BINS, rebin

    rng = np.random.default_rng(0)
    collector = HistogramCollector("entropy", False, HIST_BINS, 128, 99.99, "same")
    with contextlib.redirect_stdout(io.StringIO()):
        collector.collect({"a": [np.abs(rng.normal(0, 1, 10000)).astype(np.float32)]})
        collector.collect({"a": [np.float32([37.0, 0.5])]})  # a later chunk reaching 10x further
    grown = collector.histogram_dict["a"]
    assert len(grown[0]) > 5 * HIST_BINS
    hist, edges = rebin(grown)[:2]
    assert len(hist) <= HIST_BINS and len(edges) == len(hist) + 1 and hist.sum() == grown[0].sum()
    assert edges[len(hist) // 2] == 0.0 and edges[0] <= -37.0 <= 37.0 <= edges[-1]
    assert rebin((hist, edges, 0.0, 37.0, 37.0))[0] is hist  # within the limit: unchanged


def test_mse_range_trades_clipping_against_rounding() -> None:
    edges = np.linspace(-8, 8, 2049, dtype=np.float32)
    hist = np.zeros(2048, np.int64)
    centers = (edges[:-1] + edges[1:]) / 2
    hist[(np.abs(centers) < 1.0)] = 100_000  # bulk of 25.6M values in [-1, 1]
    hist[-1] = 1  # one value at ~8
    lo8, hi8 = mse_range(hist, edges, -1.0, 8.0, 8)
    lo16, hi16 = mse_range(hist, edges, -1.0, 8.0, 16)
    assert lo8 == pytest.approx(-1.0, abs=0.01) and lo16 == pytest.approx(-1.0, abs=0.01)
    assert 0.99 < hi8 < 1.1  # clipping the lone outlier costs (8 - 1)^2, far less than 255 coarse steps
    assert hi16 == pytest.approx(8.0, abs=0.05)  # with 65534 steps nothing is worth clipping
    assert mse_range(np.zeros(4, np.int64), np.linspace(0, 1, 5), 0.0, 0.0, 8) == (0.0, 0.0)


# --- exports --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_config_is_the_original_export_byte_for_byte(tmp_path: Path, converted: Path, manifests: Path) -> None:
    """The old code path, inlined: MinMax quantize_static (its calibrator on posezoo's fixed thread
    count, as quantize_onnx runs it on any machine) and an untouched TFLiteConverter."""
    import onnx
    import tensorflow as tf
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pipeline.calibration.reader import ManifestReader, iter_inputs

    spec = load_model("tiny_landmarks").input
    manifest = manifests / "manifest.json"
    for per_channel in (True, False):
        quantize_onnx(converted / "model.onnx", tmp_path / "new.onnx", manifest, spec, QuantConfig(per_channel))
        quant_pre_process(str(converted / "model.onnx"), str(tmp_path / "pre.onnx"), skip_symbolic_shape=False)
        name = onnx.load(str(converted / "model.onnx")).graph.input[0].name
        with pinned_calibrators():
            quantize_static(str(tmp_path / "pre.onnx"), str(tmp_path / "old.onnx"), ManifestReader(manifest, spec, name, "NCHW"), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        assert _sha(tmp_path / "new.onnx") == _sha(tmp_path / "old.onnx")

        quantize_tflite(converted / "saved_model", tmp_path / "new.tflite", manifest, spec, QuantConfig(per_channel))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(converted / "saved_model"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x] for _, x in iter_inputs(manifest, spec, "NHWC"))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        converter._experimental_disable_per_channel = not per_channel
        (tmp_path / "old.tflite").write_bytes(converter.convert())
        assert _sha(tmp_path / "new.tflite") == _sha(tmp_path / "old.tflite")


@pytest.mark.parametrize("bits", [8, 16])
def test_split_quantization_with_unedited_statistics_is_the_converter(tmp_path: Path, converted: Path, manifests: Path, bits: int) -> None:
    """The calibrate → edit → quantize path gives the converter's own bytes when nothing is edited."""
    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils

    from pipeline.calibration.reader import iter_inputs
    from pipeline.quantize.tflite import _split_quantization

    spec = load_model("tiny_landmarks").input
    manifest = manifests / "manifest.json"
    files = []
    for split in (False, True):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(converted / "saved_model"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x] for _, x in iter_inputs(manifest, spec, "NHWC"))
        ops = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 if bits == 16 else tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        converter.target_spec.supported_ops = [ops]
        converter.inference_input_type = converter.inference_output_type = tf.int16 if bits == 16 else tf.int8
        if split:  # a flatbuffer round trip, as the range editing does
            _split_quantization(converter, lambda b: (flatbuffer_utils.convert_object_to_bytearray(flatbuffer_utils.convert_bytearray_to_object(bytearray(b))), []))
        files.append(bytes(converter.convert()))
    assert files[0] == files[1]


@pytest.mark.parametrize("method", ["percentile", pytest.param("entropy", marks=pytest.mark.slow), "mse"])
def test_shared_ranges_clip_the_outlier_identically_in_both_formats(tmp_path: Path, outlier: Path, manifests: Path, method: str) -> None:
    spec = load_model("tiny_landmarks").input
    manifest = manifests / "manifest.json"
    scaled = _scaled_tensor(outlier / "model.onnx")
    config = QuantConfig(False, method)
    minmax = compute_ranges(outlier / "model.onnx", manifest, spec, QuantConfig(False))
    table = compute_ranges(outlier / "model.onnx", manifest, spec, config)
    assert minmax.ranges[scaled] == minmax.observed[scaled] == table.observed[scaled]
    lo, hi = table.ranges[scaled]
    # MSE clips little here: 12 spikes' squared clipping error outweighs the rounding error of
    # 393k values (the range-function test shows it halving a range over 655k values).
    assert lo == 0.0 and hi < (0.99 if method == "mse" else 0.5) * minmax.ranges[scaled][1], (method, table.ranges[scaled], minmax.ranges[scaled])
    assert RangeTable.from_json(table.to_json()) == table

    quantize_onnx(outlier / "model.onnx", tmp_path / "m.onnx", manifest, spec, config, ranges=table)
    report = quantize_tflite(outlier / "saved_model", tmp_path / "m.tflite", manifest, spec, config, float_onnx=outlier / "model.onnx")
    assert report.tensors > 0 and report.mapped == report.tensors and not report.unmapped

    onnx_lo, onnx_hi = _onnx_ranges(tmp_path / "m.onnx")[scaled]
    assert onnx_hi == pytest.approx(hi, rel=1e-2)  # the table's range, up to zero-point rounding
    # The TFLite tensor holding the same values got the same range (same scale and zero point).
    assert any(a == pytest.approx(onnx_lo, rel=1e-5, abs=1e-6) and b == pytest.approx(onnx_hi, rel=1e-5) for a, b in _tflite_ranges(tmp_path / "m.tflite"))
    # ...which MinMax does not produce.
    quantize_onnx(outlier / "model.onnx", tmp_path / "mm.onnx", manifest, spec, QuantConfig(False))
    assert _onnx_ranges(tmp_path / "mm.onnx")[scaled][1] > onnx_hi * 1.01


@pytest.mark.slow
def test_shared_ranges_are_deterministic_and_agree_on_the_tiny_model(tmp_path: Path, tiny_model: Path, converted: Path, manifests: Path) -> None:
    spec = load_model("tiny_landmarks")
    manifest = manifests / "manifest.json"
    config = QuantConfig(True, "percentile", 99.9)
    for run in ("a", "b"):
        quantize_onnx(converted / "model.onnx", tmp_path / f"{run}.onnx", manifest, spec.input, config)
        report = quantize_tflite(converted / "saved_model", tmp_path / f"{run}.tflite", manifest, spec.input, config, float_onnx=converted / "model.onnx")
        assert report.mapped == report.tensors > 0
    assert _sha(tmp_path / "a.onnx") == _sha(tmp_path / "b.onnx")
    assert _sha(tmp_path / "a.tflite") == _sha(tmp_path / "b.tflite")
    onnx_ranges = _onnx_ranges(tmp_path / "a.onnx")
    tflite_ranges = _tflite_ranges(tmp_path / "a.tflite")
    shared = [r for r in onnx_ranges.values() if any(r == pytest.approx(t, rel=1e-5, abs=1e-6) for t in tflite_ranges)]
    assert len(shared) >= len(onnx_ranges) - 2  # all but the graph outputs' fixed-range sigmoids
    for fmt in ("onnx", "tflite"):
        metrics, _ = measure_drift(spec, tiny_model, tmp_path / f"a.{fmt}", manifests / "holdout.json")
        assert metrics["mean_px"] < 3.0


def test_16x8_has_int16_activations_and_runs(tmp_path: Path, tiny_model: Path, converted: Path, manifests: Path) -> None:
    import onnx

    spec = load_model("tiny_landmarks")
    manifest = manifests / "manifest.json"
    config = QuantConfig(True, activation_bits=16)
    quantize_tflite(converted / "saved_model", tmp_path / "m.tflite", manifest, spec.input, config)
    quantize_onnx(converted / "model.onnx", tmp_path / "m.onnx", manifest, spec.input, config)

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "m.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int16
    assert all(d["dtype"] == np.int16 for d in interpreter.get_output_details())
    dtypes = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int16 in dtypes and np.int8 in dtypes and np.float32 not in dtypes  # int16 activations, int8 weights
    model = onnx.load(str(tmp_path / "m.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q and all(n.domain == "com.microsoft" for n in q)
    assert {inits[n.input[2]].data_type for n in q if n.input[2] in inits} == {onnx.TensorProto.INT16}
    for fmt in ("tflite", "onnx"):
        metrics, _ = measure_drift(spec, tiny_model, tmp_path / f"m.{fmt}", manifests / "holdout.json")
        assert metrics["mean_px"] < 0.5  # int16 activations: far below int8's error


def test_mse_16x8_imposes_shared_ranges_on_tflite(tmp_path: Path, outlier: Path, manifests: Path) -> None:
    spec = load_model("tiny_landmarks").input
    config = QuantConfig(False, "mse", activation_bits=16)
    report = quantize_tflite(outlier / "saved_model", tmp_path / "m.tflite", manifests / "manifest.json", spec, config, float_onnx=outlier / "model.onnx")
    assert report.mapped == report.tensors > 0
    table = compute_ranges(outlier / "model.onnx", manifests / "manifest.json", spec, config)
    hi = table.ranges[_scaled_tensor(outlier / "model.onnx")][1]
    # 16x8 activations are symmetric: scale = max|range| / 32767.
    assert any(b == pytest.approx(hi, rel=1e-5) for _, b in _tflite_ranges(tmp_path / "m.tflite"))


def test_fallback_layer_stays_float_in_both_formats(tmp_path: Path, tiny_model: Path, converted: Path, manifests: Path) -> None:
    import onnx
    import tflite

    spec = load_model("tiny_landmarks")
    layers = quantizable_layers(converted / "model.onnx")
    graph = onnx.load(str(converted / "model.onnx")).graph
    kinds = {n.name: n.op_type for n in graph.node}
    assert [kinds[n] for n in layers] == ["Conv", "Conv", "Conv", "MatMul", "MatMul"]  # graph order; tf2onnx writes Dense as MatMul
    kept = layers[1]  # the depthwise conv
    weight = next(n.input[1] for n in graph.node if n.name == kept)
    config = QuantConfig(True, float_nodes=(kept,))
    quantize_onnx(converted / "model.onnx", tmp_path / "m.onnx", manifests / "manifest.json", spec.input, config)
    report = quantize_tflite(converted / "saved_model", tmp_path / "m.tflite", manifests / "manifest.json", spec.input, config, float_onnx=converted / "model.onnx")
    assert list(report.float_layers) == [kept]

    quantized = onnx.load(str(tmp_path / "m.onnx")).graph
    (node,) = [n for n in quantized.node if n.name == kept]
    assert node.input[1] == weight and weight in {i.name for i in quantized.initializer}  # float weights, no DequantizeLinear
    assert sum(n.op_type == "Conv" and n.input[1] in {i.name for i in quantized.initializer} for n in quantized.node) == 1

    model = tflite.Model.GetRootAsModel((tmp_path / "m.tflite").read_bytes(), 0)
    sub = model.Subgraphs(0)
    float_ops = []
    for op in (sub.Operators(i) for i in range(sub.OperatorsLength())):
        code = model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()
        if code in (tflite.BuiltinOperator.CONV_2D, tflite.BuiltinOperator.DEPTHWISE_CONV_2D, tflite.BuiltinOperator.FULLY_CONNECTED):
            if sub.Tensors(op.Inputs(1)).Type() == tflite.TensorType.FLOAT32:
                float_ops.append(code)
    assert float_ops == [tflite.BuiltinOperator.DEPTHWISE_CONV_2D]
    for fmt in ("onnx", "tflite"):
        metrics, _ = measure_drift(spec, tiny_model, tmp_path / f"m.{fmt}", manifests / "holdout.json")
        assert metrics["mean_px"] < 3.0


def test_optimize_computes_shared_ranges_once_for_both_exports(tmp_path: Path, converted: Path, manifests: Path) -> None:
    """The optimize stage writes the scheme's range table; both quantize stages read it, and the
    exports equal those computed from a fresh table (the table is the only shared state)."""
    import json

    import yaml

    from pipeline.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "models": {"tiny_landmarks": {"resolution": TINY_SIZE}},
        "convert": {"opset": 17, "atol": 1e-3, "rtol": 1e-4, "verify_samples": 4},
        "quantize": {"schemes": ["pt_mse"], "formats": ["tflite", "onnx"], "recipes": {"pt_mse": {"weights": "per_tensor", "calibration": "mse"}}},
    }))
    manifest = manifests / "manifest.json"
    prepared = tmp_path / "prepared"
    common = ["--model", "tiny_landmarks", "--scheme", "pt_mse", "--manifest", str(manifest), "--params", str(params)]
    assert main(["optimize", *common, "--float-dir", str(converted), "--out", str(prepared), "--report", str(tmp_path / "r.json")]) == 0
    table = RangeTable.from_json((prepared / "ranges.json").read_text())
    assert table.calibration == "mse" and table.ranges
    for fmt in ("onnx", "tflite"):
        assert main(["quantize", *common, "--format", fmt, "--float-dir", str(prepared), "--out-dir", str(tmp_path / fmt)]) == 0
    (onnx_file,) = (tmp_path / "onnx").glob("*.onnx")
    direct = tmp_path / "direct.onnx"
    spec = load_model("tiny_landmarks").input
    quantize_onnx(converted / "model.onnx", direct, manifest, spec, QuantConfig(False, "mse"), ranges=compute_ranges(converted / "model.onnx", manifest, spec, QuantConfig(False, "mse")))
    assert onnx_file.read_bytes() == direct.read_bytes()
    made = json.loads(next((tmp_path / "tflite").glob("*.quant.json")).read_text())
    assert made["calibration"] == "mse" and made["granularity"] == "per_tensor"
