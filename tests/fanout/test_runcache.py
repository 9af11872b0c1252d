"""A run-cache pushed by :func:`pipeline.publish.runcache.push_run_cache` lets another clone restore
a run, ``cache: false`` metrics included; DVC's own ``push --run-cache`` does not (which is why the
module exists: if DVC starts pushing those objects, the second test fails and the module can go)."""

from __future__ import annotations

from contextlib import chdir
from pathlib import Path

import pytest

from pipeline.publish.runcache import push_run_cache
from tests.integration.conftest import DVC, run

pytestmark = pytest.mark.slow  # DVC subprocesses on scratch projects

STAGE = "quantize@a-pc"
METRICS = Path("metrics/quantize/a-pc.json")


def _with_k5_run(toy: Path) -> bytes:
    """Reproduce the toy project, run the k=5 point too (run-cache only), return its metrics."""
    run([DVC, "repro"], toy)
    run(["git", "add", "-A"], toy)
    run(["git", "commit", "-qm", "repro"], toy)
    run([DVC, "exp", "run", "-q", "-S", "recipes.pc.k=5"], toy)
    swept = (toy / METRICS).read_bytes()
    run(["git", "checkout", "--", "."], toy)
    run([DVC, "checkout", "-q"], toy)
    return swept


def _k5_in_a_clone(toy: Path, clone: Path) -> str:
    run(["git", "clone", "-q", str(toy), str(clone)], toy.parent)
    run([DVC, "pull", "-q"], clone)
    (clone / "params.yaml").write_text((clone / "params.yaml").read_text().replace("k: 1", "k: 5"))
    return run([DVC, "repro", "--pull", STAGE], clone)


def test_the_pushed_run_cache_restores_a_run_and_its_metrics_elsewhere(toy: Path, tmp_path: Path) -> None:
    swept = _with_k5_run(toy)
    from dvc.repo import Repo

    with chdir(toy), Repo(str(toy)) as repo:
        assert push_run_cache(repo, None) >= 3  # the k=5 run's output, its metrics, report's metrics
    out = _k5_in_a_clone(toy, tmp_path / "clone")
    assert f"Stage '{STAGE}' is cached - skipping run" in out and "Running stage" not in out
    assert (tmp_path / "clone" / METRICS).read_bytes() == swept


def test_dvcs_own_run_cache_push_leaves_the_run_behind(toy: Path, tmp_path: Path) -> None:
    _with_k5_run(toy)
    run([DVC, "push", "-q", "--run-cache"], toy)
    out = _k5_in_a_clone(toy, tmp_path / "clone")
    assert f"Running stage '{STAGE}'" in out
