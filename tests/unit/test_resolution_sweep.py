"""A resolution sweep through the stages: a fully convolutional source run at another input size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli import main

from tests.conftest import TINY_SIZE, photo_manifests, write_registry_entry

SWEPT = 48


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path, photo_folder: Path) -> Path:
    """A registry entry whose tiny source (convs + global mean) declares 32 and 48 px, and params at 48."""
    registry = tmp_path / "registry"
    registry.mkdir()
    entry_path = write_registry_entry(registry, "tiny_sweep", tiny_model)
    entry = yaml.safe_load(entry_path.read_text())
    entry["resolutions"] = [TINY_SIZE, SWEPT]
    entry["sources"][0]["resolutions"] = [TINY_SIZE, SWEPT]
    entry_path.write_text(yaml.safe_dump(entry))
    monkeypatch.setenv("POSEZOO_REGISTRY", str(registry))
    monkeypatch.setenv("POSEZOO_CACHE", str(tmp_path / "cache"))
    photo_manifests(tmp_path / "calib", photo_folder, 8, 4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "models": {"tiny_sweep": {"resolution": SWEPT}},
        "convert": {"opset": 17, "atol": 1e-3, "rtol": 1e-4, "verify_samples": 4},
        "quantize": {"schemes": ["per_channel"], "formats": ["tflite"], "recipes": {"per_channel": {"weights": "per_channel"}}},
    }))
    return tmp_path


def _stages(root: Path) -> int:
    params = ["--params", str(root / "params.yaml")]
    model = ["--model", "tiny_sweep"]
    manifest = ["--manifest", str(root / "calib" / "manifest.json")]
    for argv in (
        ["fetch", *model, *params, "--out", str(root / "source")],
        ["convert", *model, *params, *manifest, "--source-dir", str(root / "source"), "--out", str(root / "float"), "--report", str(root / "convert.json")],
        ["optimize", *model, *params, *manifest, "--scheme", "per_channel", "--float-dir", str(root / "float"), "--out", str(root / "opt"), "--report", str(root / "opt.json")],
        ["quantize", *model, *params, *manifest, "--scheme", "per_channel", "--format", "tflite", "--float-dir", str(root / "opt"), "--out-dir", str(root / "int8")],
        ["evaluate", *model, *params, "--source-dir", str(root / "source"), "--float-dir", str(root / "float"), "--int8", str(root / "int8"),
         "--holdout", str(root / "calib" / "holdout.json"), "--metrics", str(root / "evaluate.json")],
    ):
        code = main(argv)
        if code:
            return code
    return 0


@pytest.mark.slow
def test_the_swept_resolution_reaches_every_stage(project: Path) -> None:
    assert _stages(project) == 0
    report = json.loads((project / "convert.json").read_text())
    assert report["reshaped_from"] == [TINY_SIZE, TINY_SIZE] and report["onnx"]["max_abs_diff"] < 1e-3
    (int8,) = (project / "int8").glob("*.tflite")
    assert int8.name == f"tiny_sweep_{SWEPT}_int8_pc.tflite"
    from ai_edge_litert.interpreter import Interpreter

    assert list(Interpreter(model_path=str(int8)).get_input_details()[0]["shape"]) == [1, SWEPT, SWEPT, 3]
    metrics = json.loads((project / "evaluate.json").read_text())
    assert metrics["resolution"] == SWEPT and metrics["input_size_px"] == SWEPT
    assert 0 <= metrics["mean_px"] < 0.1 * SWEPT and np.isfinite(metrics["max_px"])


def test_an_unlisted_resolution_fails_in_the_first_stage(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["tiny_sweep"]["resolution"] = 40
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert _stages(project) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "models.tiny_sweep.resolution is 40; tiny_sweep.yaml lists [32, 48] as valid" in err
    assert not (project / "source").exists()
