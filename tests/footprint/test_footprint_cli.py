"""``posezoo footprint`` (stages/footprint.py): the metrics file DVC tracks, the summary, targets."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import PosezooError
from pipeline.footprint.targets import TARGETS_FILE, Target, judge, load_targets
from stages import footprint as stage


def _run(*argv: str) -> None:
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    stage.run(parser.parse_args(list(argv)))


def test_posezoo_footprint_runs_this_stage(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    """``posezoo footprint`` (what dvc.yaml runs) dispatches to stages/footprint.py and writes the same file."""
    assert main(["footprint", str(onnx_files["qdq"]), "--out", str(tmp_path / "cli.json")]) == 0
    _run(str(onnx_files["qdq"]), "--out", str(tmp_path / "stage.json"))
    assert (tmp_path / "cli.json").read_bytes() == (tmp_path / "stage.json").read_bytes()
    assert main(["footprint", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "x.json")]) == 2


def test_out_writes_dvc_friendly_metrics(onnx_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "metrics" / "qdq_onnx.json"
    _run(str(onnx_files["qdq"]), "--out", str(out), "--json")
    doc = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == doc
    for key in (
        "macc", "weights_bytes", "weights_kib", "quant_params_bytes", "flash_bytes", "activations_plan_bytes",
        "activations_lower_bound_bytes", "activations_tflm_plan_bytes", "not_counted_op_count",
    ):
        assert isinstance(doc[key], (int, float)) and not isinstance(doc[key], bool), key
    assert (doc["macc"], doc["weights_bytes"], doc["activations_plan_bytes"]) == (7847, 164, 960)
    assert doc["macc_by_op_type"]["Conv"] == 6916
    # The per-op table is a list (DVC shows no lists as metrics) and adds up to the totals.
    assert isinstance(doc["ops"], list) and len(doc["ops"]) == 7
    assert sum(row["macc"] for row in doc["ops"]) == doc["macc"]
    assert sum(row["weights_bytes"] for row in doc["ops"]) == doc["weights_bytes"]
    assert doc["ops"][1] == {"index": 1, "op": "Conv", "output_shape": [1, 4, 8, 8], "macc": 6916, "weights_bytes": 124}
    assert set(doc["targets"]) == set(load_targets())


def test_summary_and_target_selection(onnx_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _run(str(onnx_files["float"]), "--target", "stm32h7", "--target", "imx93")
    text = capsys.readouterr().out
    assert "7,453" in text and "stm32h7" in text and "imx93" in text and "stm32n6" not in text


def test_unknown_target_is_an_error(onnx_files: dict[str, Path]) -> None:
    with pytest.raises(PosezooError, match="unknown target.*nrf52.*choose from"):
        _run(str(onnx_files["float"]), "--target", "nrf52")


def test_unknown_op_is_warned(onnx_files: dict[str, Path], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.WARNING, logger="posezoo.footprint"):
        _run(str(onnx_files["unknown"]))
    assert "Hardmax ×1" in caplog.text and "NOT COUNTED" in capsys.readouterr().out


def test_every_budget_names_its_source() -> None:
    raw = yaml.safe_load(TARGETS_FILE.read_text())["targets"]
    for name, target in load_targets().items():
        assert "http" in target.ram_source, name
        assert target.flash_source, name
        assert raw[name]["ram_bytes"] == target.ram_bytes > 0


def test_verdicts() -> None:
    mcu = Target("mcu", "", ram_bytes=1000, flash_bytes=5000, weights_in_ram=False, ram_source="", flash_source="")
    mpu = Target("mpu", "", ram_bytes=1000, flash_bytes=None, weights_in_ram=True, ram_source="", flash_source="")
    assert judge(mcu, 1000, 5000).fits
    assert not judge(mcu, 1001, 10).fits and not judge(mcu, 10, 5001).fits
    assert judge(mpu, 600, 400).fits and not judge(mpu, 600, 401).fits  # weights share the RAM
    assert judge(mpu, 600, 400).flash_needed_bytes is None
