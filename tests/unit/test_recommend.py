"""Recommendation per target: accelerator constraints and memory fit filter, lowest drift wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import PosezooError
from pipeline.recommend import recommend

TARGETS = ("stm32n6", "stm32h7", "stm32mp2", "imx93")


def _variant(name: str, granularity: str, mean_px: float, bits: int = 8, float_layers: int = 0, fits: bool = True, weights: int = 1000):
    evaluate = {"variant": name, "mean_px": mean_px, "quantization": {"granularity": granularity, "activation_bits": bits, "float_layers": float_layers}}
    footprint = {"weights_bytes": weights, "targets": {t: {"fits": fits} for t in TARGETS}}
    return evaluate, footprint


def test_mp2_gets_the_best_per_tensor_variant_others_the_best_overall() -> None:
    result = recommend(
        "m",
        [
            _variant("m_pc.tflite", "per_channel", 3.0),
            _variant("m_pt.tflite", "per_tensor", 9.0),
            _variant("m_pt.onnx", "per_tensor", 8.0),
            _variant("m_a16.tflite", "per_channel", 1.0, bits=16),
            _variant("m_mix.onnx", "per_tensor", 2.0, float_layers=3),
        ],
    )["targets"]
    assert result["stm32mp2"]["recommended"] == "m_pt.onnx"
    assert result["stm32n6"]["recommended"] == "m_pc.tflite"  # 16-bit and float layers are excluded there
    assert result["stm32h7"]["recommended"] == "m_mix.onnx"  # float layers run on its CPU
    assert result["imx93"]["recommended"] == "m_a16.tflite"  # Ethos-U runs 16x8
    dropped = {c["variant"]: c["reason"] for c in result["stm32mp2"]["candidates"] if not c["eligible"]}
    assert "per_channel weights are not run" in dropped["m_pc.tflite"]


def test_memory_fit_is_required_and_nothing_eligible_is_said() -> None:
    result = recommend("m", [_variant("m_pc.tflite", "per_channel", 3.0, fits=False)])["targets"]
    assert all(t["recommended"] is None for t in result.values())
    assert result["stm32n6"]["candidates"][0]["reason"] == "does not fit the target's memory"


def test_ties_go_to_the_smaller_model() -> None:
    result = recommend("m", [_variant("a", "per_tensor", 2.0, weights=2000), _variant("b", "per_tensor", 2.0, weights=1000)])["targets"]
    assert result["stm32mp2"]["recommended"] == "b"


def test_missing_inputs_are_clear_errors() -> None:
    with pytest.raises(PosezooError, match="no evaluated variants"):
        recommend("m", [])
    with pytest.raises(PosezooError, match="no 'quantization' block"):
        recommend("m", [({"variant": "x", "mean_px": 1.0}, {"weights_bytes": 1, "targets": {}})])


def test_an_openvino_ir_is_never_recommended_for_a_target() -> None:
    """The targets' toolchains take TFLite / ONNX; an IR has no target estimate, and is said so."""
    evaluate, _ = _variant("m_pc.xml", "per_channel", 0.5)
    footprint = {"format": "openvino-ir", "weights_bytes": 900, "targets": {}}
    result = recommend("m", [(evaluate, footprint), _variant("m_pc.tflite", "per_channel", 3.0)])["targets"]
    assert all(t["recommended"] == "m_pc.tflite" for name, t in result.items() if name != "stm32mp2")
    reasons = {c["variant"]: c.get("reason") for c in result["stm32n6"]["candidates"]}
    assert reasons["m_pc.xml"] == "OpenVINO IR: the target's toolchain takes TFLite or ONNX"


def test_the_stage_recommends_among_the_variants_of_the_current_params(tmp_path: Path) -> None:
    """Metrics a removed scheme left behind are never candidates; a missing one of the params is an error."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"quantize": {"schemes": ["per_tensor"], "formats": ["tflite", "onnx"]}}))
    for key, granularity, mean_px in [("per_tensor-tflite", "per_tensor", 3.0), ("per_tensor-onnx", "per_tensor", 2.0), ("removed-onnx", "per_tensor", 0.5)]:
        evaluate, footprint = _variant(f"m_{key}", granularity, mean_px)
        for folder, doc in (("evaluate", evaluate), ("footprint", footprint)):
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f"m-{key}.json").write_text(json.dumps(doc))
    common = ["recommend", "--model", "m", "--params", str(params), "--evaluate-dir", str(tmp_path / "evaluate"), "--footprint-dir", str(tmp_path / "footprint")]
    assert main([*common, "--out", str(tmp_path / "out.json")]) == 0
    result = json.loads((tmp_path / "out.json").read_text())["targets"]
    assert result["stm32mp2"]["recommended"] == "m_per_tensor-onnx"
    assert {c["variant"] for c in result["stm32mp2"]["candidates"]} == {"m_per_tensor-tflite", "m_per_tensor-onnx"}
    (tmp_path / "evaluate" / "m-per_tensor-tflite.json").unlink()
    assert main([*common, "--out", str(tmp_path / "again.json")]) == 2
