"""int8 OpenVINO IR export with NNCF (pipeline/quantize/openvino.py) on the tiny model the tests build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.convert.tflite_to_onnx import tflite_to_onnx
from pipeline.errors import PosezooError
from pipeline.evaluate.drift import measure_drift
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.openvino import WEIGHTED_OPS, export_openvino_int8
from pipeline.registry import load_model

from tests.conftest import TINY_SIZE, photo_manifests

pytestmark = pytest.mark.usefixtures("tiny_env")

#: The tiny model's weighted ops as the ONNX frontend names them (Conv → Convolution "<name>/WithoutBiases").
WEIGHTED = ["Conv_0/WithoutBiases", "Conv_2/WithoutBiases", "Conv_4/WithoutBiases", "MatMul_10", "MatMul_8"]
#: Output channels of each (Dense weights are [out, in] after the frontend's transpose).
CHANNELS = [8, 8, 16, 10, 1]


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 12, 6)


@pytest.fixture(scope="module")
def float_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    out = tmp_path_factory.mktemp("float") / "model.onnx"
    tflite_to_onnx(tiny_model, out, opset=17)
    return out


def _weight_scale_shapes(xml: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(op name, shape of its weight scale) of every weighted op of a saved int8 IR, in graph order.

    OpenVINO stores FakeQuantized weights as an int8 constant followed by Convert, an optional
    Subtract (zero point) and a Multiply by the scale; a per-tensor weight's scale has one
    element, a per-channel one has one per output channel. Ops whose weights are float are left out.
    """
    import openvino as ov

    found = []
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OPS:
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in ("Reshape", "Transpose", "Unsqueeze"):
            node = node.input_value(0).get_node()
        if node.get_type_name() != "Multiply":
            continue
        scale = next((node.input_value(i).get_node() for i in (0, 1) if node.input_value(i).get_node().get_type_name() == "Constant"), None)
        data = node.input_value(0).get_node()
        while data.get_type_name() in ("Subtract", "Convert"):
            data = data.input_value(0).get_node()
        if scale is None or data.get_type_name() != "Constant" or data.get_output_element_type(0) != ov.Type.i8:
            continue
        found.append((op.get_friendly_name(), tuple(int(d) for d in scale.get_output_shape(0))))
    return found


def _op_types(xml: Path) -> list[str]:
    import openvino as ov

    return [op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()]


@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_ir_is_int8_with_the_recipes_weight_scales_deterministic_and_close(tmp_path: Path, tiny_model: Path, float_onnx: Path, manifests: Path, per_channel: bool) -> None:
    spec = load_model("tiny_landmarks")
    manifest = manifests / "manifest.json"
    first, second = tmp_path / "a" / "m.xml", tmp_path / "b" / "m.xml"
    made = export_openvino_int8(float_onnx, first, manifest, spec.input, QuantConfig(per_channel))
    export_openvino_int8(float_onnx, second, manifest, spec.input, QuantConfig(per_channel))
    # same process: OpenVINO's process-wide op counter has moved on between the two exports
    assert first.read_bytes() == second.read_bytes()
    assert first.with_suffix(".bin").read_bytes() == second.with_suffix(".bin").read_bytes()
    assert sorted(p.name for p in first.parent.iterdir()) == ["m.bin", "m.xml"]  # no temporaries left
    assert made["nncf_bias_correction"] is False and made["weights_per_channel"] is per_channel

    scales = _weight_scale_shapes(first)
    assert [name for name, _ in scales] == WEIGHTED  # every weighted layer has int8 weights
    for (_, shape), channels in zip(scales, CHANNELS):
        if per_channel:
            assert shape[0] == channels and int(np.prod(shape)) == channels
        else:
            assert int(np.prod(shape, dtype=np.int64)) == 1
    ops = _op_types(first)
    assert ops.count("FakeQuantize") >= 4  # activations: the input and the ReLU / pooling outputs

    metrics, _ = measure_drift(spec, tiny_model, first, manifests / "holdout.json")
    assert 0 < metrics["mean_px"] <= metrics["max_px"] < 3.0


def test_float_nodes_stay_float(tmp_path: Path, float_onnx: Path, manifests: Path) -> None:
    spec = load_model("tiny_landmarks").input
    dest = tmp_path / "fb.xml"
    export_openvino_int8(float_onnx, dest, manifests / "manifest.json", spec, QuantConfig(False, float_nodes=("Conv_4", "MatMul_8")))
    assert [name for name, _ in _weight_scale_shapes(dest)] == ["Conv_0/WithoutBiases", "Conv_2/WithoutBiases", "MatMul_10"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (QuantConfig(True, activation_bits=16), r"recipes\.a16w8: activation_bits 16 is not an int8 OpenVINO IR"),
        (QuantConfig(False, calibration="entropy"), r"recipes\.a16w8: calibration entropy needs its shared range table"),
        (QuantConfig(False, float_nodes=("Conv_99",)), r"model\.onnx: float_nodes Conv_99: no OpenVINO op keeps this ONNX node name"),
    ],
    ids=["16-bit", "entropy", "unknown-float-node"],
)
def test_settings_an_int8_ir_cannot_honour_are_refused(tmp_path: Path, float_onnx: Path, manifests: Path, config: QuantConfig, message: str) -> None:
    dest = tmp_path / "out" / "m.xml"
    with pytest.raises(PosezooError, match=message) as err:
        export_openvino_int8(float_onnx, dest, manifests / "manifest.json", load_model("tiny_landmarks").input, config, "params.yaml: quantize.recipes.a16w8")
    assert "\n" not in str(err.value)
    assert not dest.exists() and not dest.with_suffix(".bin").exists()


@pytest.mark.slow
def test_shared_ranges_are_imposed_on_the_activation_quantizers(tmp_path: Path, float_onnx: Path, manifests: Path) -> None:
    """A percentile table (NNCF has no percentile estimator) sets the IR's activation ranges: every
    activation FakeQuantize whose tensor the table names takes its range, in NNCF's shape."""
    import openvino as ov

    from pipeline.quantize.ranges import compute_ranges

    spec = load_model("tiny_landmarks").input
    config = QuantConfig(False, calibration="percentile", percentile=99.0)
    table = compute_ranges(float_onnx, manifests / "manifest.json", spec, config)
    made = export_openvino_int8(float_onnx, tmp_path / "p.xml", manifests / "manifest.json", spec, config, ranges=table)
    export_openvino_int8(float_onnx, tmp_path / "m.xml", manifests / "manifest.json", spec, QuantConfig(False))
    assert made["activation_range"] == "percentile" and made["ranges"]["imposed"] >= 3, made
    assert made["ranges"]["imposed"] + made["ranges"]["kept_minmax"] == made["ranges"]["activation_fq"]

    def highs(xml: Path) -> dict[str, float]:
        found = {}
        for op in ov.Core().read_model(str(xml)).get_ordered_ops():
            if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() != "Constant":
                for name in op.input_value(0).get_names():
                    found[name] = float(op.input_value(2).get_node().get_data().max())
        return found

    clipped, minmax = highs(tmp_path / "p.xml"), highs(tmp_path / "m.xml")
    set_here = [n for n in clipped if n in table.ranges and table.ranges[n][0] >= 0]  # unsigned: hi is the table's
    assert set_here and all(clipped[n] == pytest.approx(table.ranges[n][1], rel=1e-6) for n in set_here)
    assert any(clipped[n] < 0.99 * minmax[n] for n in set_here)  # the 99th percentile clips below MinMax


@pytest.mark.slow
def test_quantize_and_evaluate_stages_on_an_ir(tmp_path: Path, tiny_model: Path, float_onnx: Path, manifests: Path) -> None:
    from pipeline.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "models": {"tiny_landmarks": {"resolution": TINY_SIZE}},
        "quantize": {"schemes": ["per_tensor", "a16w8"], "formats": ["openvino"],
                     "recipes": {"per_tensor": {"weights": "per_tensor"}, "a16w8": {"weights": "per_channel", "activation_bits": 16}}},
        "accuracy": {"datasets": []},
    }))
    prepared, source, out = tmp_path / "prepared", tmp_path / "source", tmp_path / "int8"
    prepared.mkdir(), source.mkdir()
    shutil.copy(float_onnx, prepared / "model.onnx")
    shutil.copy(tiny_model, source / "model.tflite")
    common = ["--model", "tiny_landmarks", "--format", "openvino", "--float-dir", str(prepared), "--manifest", str(manifests / "manifest.json"),
              "--params", str(params), "--out-dir", str(out)]
    assert main(["quantize", "--scheme", "per_tensor", *common]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"tiny_landmarks_{TINY_SIZE}_int8_pt{s}" for s in (".bin", ".quant.json", ".xml")]
    made = json.loads(next(out.glob("*.quant.json")).read_text())
    assert made["granularity"] == "per_tensor" and made["nncf"]["activation_range"] == "minmax"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["quantize", "--scheme", "a16w8", *common]) == 2  # refused before the old variant is removed
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    metrics = tmp_path / "eval.json"
    assert main(["evaluate", "--model", "tiny_landmarks", "--source-dir", str(source), "--int8", str(out),
                 "--holdout", str(manifests / "holdout.json"), "--params", str(params), "--metrics", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    assert result["variant"] == f"tiny_landmarks_{TINY_SIZE}_int8_pt.xml" and result["quantization"]["nncf"]["preset"] == "performance"
    assert 0 < result["mean_px"] < 3.0

    # footprint: the IR's own sizes (int8 weights of the 5 layers: 3*3*3*8 + 3*3*8 + 8*16 + 16*10 + 16 bytes), no estimate
    assert main(["footprint", str(out), "--out", str(tmp_path / "fp.json")]) == 0
    sizes = json.loads((tmp_path / "fp.json").read_text())
    assert sizes["format"] == "openvino-ir" and sizes["targets"] == {} and "no MACC" in sizes["notes"][0]
    assert sizes["weights_by_dtype"]["i8"] == 216 + 72 + 128 + 160 + 16
    assert sizes["bin_bytes"] == (out / f"tiny_landmarks_{TINY_SIZE}_int8_pt.bin").stat().st_size
