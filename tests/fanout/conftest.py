"""Scratch DVC projects running the toy pipeline (toy_dvc.yaml + toy_step.py) with a local remote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import DVC, run

HERE = Path(__file__).parent
PARAMS = {
    "models": {"a": {"scale": 2}, "b": {"scale": 3}},
    "schemes": ["pc", "pt"],
    "recipes": {"pc": {"k": 1}, "pt": {"k": 2}, "a16": {"k": 3}},
}


def toy_project(root: Path, remote: Path | None) -> Path:
    """A committed git + DVC project at ``root`` with the toy pipeline (and ``remote`` as default)."""
    root.mkdir(parents=True)
    shutil.copy(HERE / "toy_step.py", root / "toy_step.py")
    shutil.copy(HERE / "toy_dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "test@posezoo"], root)
    run(["git", "config", "user.name", "posezoo tests"], root)
    run([DVC, "init", "-q"], root)
    run([DVC, "config", "core.analytics", "false"], root)
    if remote is not None:
        run([DVC, "remote", "add", "-q", "-d", "shared", str(remote)], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "toy pipeline"], root)
    return root


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    return toy_project(tmp_path / "project", tmp_path / "remote")
