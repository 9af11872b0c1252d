"""Fan-out planning (DVC's index, up-to-date stages, where each runs, sweep grids) and one worker
task run without Ray, on the toy pipeline with a local directory remote."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import PosezooError
from pipeline.fanout.coordinator import Settings, fanout
from pipeline.fanout.plan import (
    BENCH,
    COORDINATOR,
    WORKER,
    Point,
    clone_point,
    plan,
    sweep_points,
)
from pipeline.fanout.worker import StageFailed, Task, run_stage
from tests.integration.conftest import DVC, run

pytestmark = pytest.mark.slow  # DVC subprocesses on scratch projects

CLUSTER = {"prepare@a", "prepare@b", "quantize@a-pc", "quantize@a-pt", "quantize@b-pc", "quantize@b-pt"}


def _where(jobs: list) -> dict[str, str]:
    return {j.name: j.where for j in jobs}


def test_a_fresh_project_plans_every_stage_upstream_first(toy: Path) -> None:
    jobs = plan(toy, toy, bench=())
    assert _where(jobs) == {**dict.fromkeys(CLUSTER, WORKER), "report": COORDINATOR}
    order = [j.name for j in jobs]
    assert order.index("prepare@a") < order.index("quantize@a-pc") and order[-1] == "report"
    assert dict((j.name, set(j.upstream)) for j in jobs)["quantize@b-pt"] == {"prepare@b"}
    assert _where(plan(toy, toy, bench=("quantize",)))["quantize@a-pc"] == BENCH
    without_bench_nodes = _where(plan(toy, toy, bench=("prepare",), bench_nodes=False))
    assert without_bench_nodes == {**dict.fromkeys(CLUSTER, COORDINATOR), "report": COORDINATOR}, "their downstream stages follow them"


def test_up_to_date_stages_are_dropped_and_a_sweep_point_keeps_only_what_it_changes(toy: Path, tmp_path: Path) -> None:
    run([DVC, "repro"], toy)
    run(["git", "add", "-A"], toy)
    run(["git", "commit", "-qm", "repro"], toy)
    assert plan(toy, toy, bench=()) == []
    rev = run(["git", "rev-parse", "HEAD"], toy).strip()
    point = clone_point(toy, rev, Point(("recipes.pc.k=5",)), tmp_path / "point")
    assert yaml.safe_load((point / "params.yaml").read_text())["recipes"]["pc"] == {"k": 5}
    assert _where(plan(toy, point, bench=())) == {"quantize@a-pc": WORKER, "quantize@b-pc": WORKER, "report": COORDINATOR}
    added = clone_point(toy, rev, Point(("schemes=[pc,pt,a16]",)), tmp_path / "added")
    assert set(_where(plan(toy, added, bench=()))) == {"quantize@a-a16", "quantize@b-a16", "report"}


def test_sweep_grids_use_dvcs_override_syntax() -> None:
    points = sweep_points(["recipes.pc.k=5,6", "models.a.scale=1"], "sw")
    assert [(p.name, p.overrides) for p in points] == [("sw-1", ("recipes.pc.k=5", "models.a.scale=1")), ("sw-2", ("recipes.pc.k=6", "models.a.scale=1"))]
    assert sweep_points([], None) == [Point(())]
    assert sweep_points(["schemes=[pc,pt]"], "one")[0].name == "one"
    for bad, message in ((["other.yaml:a=1"], "only params.yaml keys"), (["recipes.pc.k=["], "not a valid override")):
        with pytest.raises(PosezooError, match=message) as err:
            sweep_points(bad, None)
        assert "\n" not in str(err.value)


def test_a_worker_task_restores_inputs_runs_and_pushes_everything_a_restore_needs(toy: Path, tmp_path: Path) -> None:
    rev = run(["git", "rev-parse", "HEAD"], toy).strip()
    remote = tmp_path / "remote"
    common = {"rev": rev, "git_url": str(toy), "workdir": str(tmp_path / "slots"), "remote": "shared", "remote_config": {"url": str(remote)}}
    first = run_stage(Task("prepare@a", **common))
    second = run_stage(Task("quantize@a-pc", upstream=("prepare@a",), **common), first)
    assert (first["node"], first["restored"], second["restored"]) == ("local", False, False)
    metrics = next(o for o in second["lock"]["outs"] if o["path"] == "metrics/quantize/a-pc.json")
    assert second["uncached_objects"] == [metrics["md5"]]
    assert (remote / "files" / "md5" / metrics["md5"][:2] / metrics["md5"][2:]).is_file(), "cache: false metrics object not pushed"
    assert any((remote / "runs").rglob("*")), "run-cache entry not pushed"
    again = run_stage(Task("quantize@a-pc", upstream=("prepare@a",), **common), first)
    assert again["restored"] and again["lock"] == second["lock"], "a rerun restores from the remote run-cache"
    assert "is cached - skipping run" in again["log"]


def test_a_failing_stage_raises_with_its_log(toy: Path, tmp_path: Path) -> None:
    rev = run(["git", "rev-parse", "HEAD"], toy).strip()
    common = {"rev": rev, "git_url": str(toy), "workdir": str(tmp_path / "slots"), "remote": "shared", "remote_config": {"url": str(tmp_path / "remote")}}
    first = run_stage(Task("prepare@a", **common))
    with pytest.raises(StageFailed) as err:
        run_stage(Task("quantize@a-pt", upstream=("prepare@a",), overrides=("recipes.pt.k=-1",), **common), first)
    assert err.value.stage == "quantize@a-pt" and "quantize: recipes.pt.k is negative" in err.value.log


def test_fanout_refuses_a_dirty_workspace_or_a_missing_remote(toy: Path) -> None:
    (toy / "params.yaml").write_text((toy / "params.yaml").read_text().replace("k: 1", "k: 4"))
    with pytest.raises(PosezooError, match="uncommitted changes .*params.yaml.*commit or stash"):
        fanout(Settings(toy))
    run(["git", "checkout", "params.yaml"], toy)
    run([DVC, "remote", "remove", "shared"], toy)
    run(["git", "commit", "-qam", "no remote"], toy)
    with pytest.raises(PosezooError, match=r"no DVC remote \(default\); add a shared one"):
        fanout(Settings(toy))
