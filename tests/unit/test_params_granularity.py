"""A sweep that adds or changes one scheme re-runs only that scheme's stages (and cards).

`dvc status --json` in a scratch copy of this checkout's dvc.yaml + dvc.lock with swept params:
the stages whose params changed must all belong to the swept scheme (plus `cards`, which renders
every scheme, and, when the sweep changes the list of variants, each model's `recommend`, which
chooses among them). Without a sweep no stage may report a params change, so the committed dvc.lock is
checked to match params.yaml too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.conftest import DVC, run

pytestmark = pytest.mark.slow  # DVC subprocesses on scratch projects


def _params_changed(tmp_path: Path, sweep: Callable[[dict[str, Any]], None]) -> set[str]:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "dvc.lock", tmp_path / "dvc.lock")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    sweep(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], tmp_path)
    run([DVC, "init", "-q"], tmp_path)
    status = json.loads(run([DVC, "status", "--json"], tmp_path))
    return {stage for stage, changes in status.items() for change in changes if isinstance(change, dict) and "params.yaml" in change.get("changed deps", {})}


def test_the_committed_lock_matches_params(tmp_path: Path) -> None:
    assert _params_changed(tmp_path, lambda p: None) == set()


def _add_a16w8(params: dict[str, Any]) -> None:
    params["quantize"]["schemes"].append("a16w8")


def _per_tensor_entropy(params: dict[str, Any]) -> None:
    params["quantize"]["recipes"]["per_tensor"]["calibration"] = "entropy"


@pytest.mark.parametrize(("sweep", "scheme", "new_variants"), [(_add_a16w8, "a16w8", True), (_per_tensor_entropy, "per_tensor", False)])
def test_a_swept_scheme_reruns_only_its_stages(tmp_path: Path, sweep: Callable[[dict[str, Any]], None], scheme: str,
                                               new_variants: bool) -> None:
    changed = _params_changed(tmp_path, sweep)
    ours = {s for s in changed if f"-{scheme}" in s}
    assert {s.split("@")[0] for s in ours} >= {"optimize", "quantize"}
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    assert changed - ours == {"cards"} | ({f"recommend@{m}" for m in models} if new_variants else set())
