"""The real pipeline under DVC on a real MediaPipe model (hand_landmark_lite, from the PyPI wheel).

Runs `dvc repro` in a scratch project that uses this checkout's dvc.yaml, calibration sources
and code, restricted to one model: 4 int8 variants come out verified, metrics are readable by
`dvc metrics show`, a second `dvc repro` does nothing, and `dvc repro --force` reproduces the
int8 files byte for byte. Needs PyPI (pip download of the mediapipe and photo wheels, cached).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

MODEL = "hand_landmark_lite"


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _int8_hashes(project: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((project / "build" / "int8").rglob("*")) if p.suffix in (".tflite", ".onnx")}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("pipeline", "stages"):
        (root / name).symlink_to(REPO / name)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "calibration").mkdir()
    shutil.copy(REPO / "calibration" / "sources.yaml", root / "calibration" / "sources.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {MODEL: params["models"][MODEL]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = str(Path(sys.executable).parent / "dvc")
    _run(["git", "init", "-q"], root)
    _run([dvc, "init", "-q"], root)
    _run([dvc, "config", "core.analytics", "false"], root)
    _run([dvc, "repro"], root)
    return root


def test_repro_makes_four_verified_variants(project: Path) -> None:
    names = set(_int8_hashes(project))
    assert names == {f"{MODEL}_224_int8_{g}.{f}" for g in ("pc", "pt") for f in ("tflite", "onnx")}
    report = json.loads((project / "metrics" / "convert" / f"{MODEL}.json").read_text())
    assert report["onnx"]["max_abs_diff"] < 0.05 and report["saved_model"]["max_abs_diff"] < 0.05
    manifest = json.loads((project / "calibration" / "default" / "manifest.json").read_text())
    holdout = json.loads((project / "calibration" / "default" / "holdout.json").read_text())
    assert manifest["num_samples"] == 100
    assert {s["sha256"] for s in manifest["samples"]}.isdisjoint({s["sha256"] for s in holdout["samples"]})


def test_metrics_show_lists_every_variant_with_drift(project: Path) -> None:
    dvc = str(Path(sys.executable).parent / "dvc")
    shown = json.loads(_run([dvc, "metrics", "show", "--json"], project))
    files = next(iter(shown.values()))["data"]
    drift = {path: entry["data"] for path, entry in files.items() if path.startswith("metrics/drift/")}
    assert len(drift) == 4
    for path, data in drift.items():
        assert data["samples"] == 40 and data["keypoints"] == 21, path
        assert 0 < data["mean_px"] <= data["p95_px"] <= data["max_px"]


def test_second_repro_is_cached_and_status_clean(project: Path) -> None:
    dvc = str(Path(sys.executable).parent / "dvc")
    out = _run([dvc, "repro"], project)
    assert "Running stage" not in out
    assert "up to date" in _run([dvc, "status"], project).lower()


def test_forced_repro_is_byte_identical(project: Path) -> None:
    dvc = str(Path(sys.executable).parent / "dvc")
    before = _int8_hashes(project)
    _run([dvc, "repro", "--force"], project)
    assert _int8_hashes(project) == before


def test_onnx_runner_gives_steady_outputs_from_the_first_call(project: Path) -> None:
    """onnxruntime's first Run of an optimized int8 QDQ session differs from later ones; the runner warms up."""
    import numpy as np

    from pipeline.calibration.reader import iter_inputs
    from pipeline.convert.runners import runner_for
    from pipeline.registry import load_model

    (model,) = (project / "build" / "int8").glob(f"*per_channel-onnx/{MODEL}_224_int8_pc.onnx")
    _, x = next(iter_inputs(project / "calibration" / "default" / "holdout.json", load_model(MODEL).input))
    run = runner_for(model)
    first, second = run(x), run(x)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
