"""``posezoo fanout`` on a 2-node Ray cluster on 127.0.0.1 (its own network namespace), against a
local directory DVC remote: the toy pipeline, a 2-point sweep and a failing stage, in one cluster
session (starting Ray costs ~20 s). The int8-like outputs must equal a plain local ``dvc repro``'s."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.fanout.conftest import toy_project
from tests.integration.conftest import DVC, run

pytestmark = pytest.mark.slow
POSEZOO = str(Path(sys.executable).parent / "posezoo")


def _namespaces_work() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not _namespaces_work():
        pytest.skip("needs `unshare -rn` (a network namespace) to keep Ray on loopback only")
    base = tmp_path_factory.mktemp("fanout")
    project = toy_project(base / "project", base / "remote")
    alone = toy_project(base / "alone", base / "alone-remote")
    fanout = f"{POSEZOO} fanout --address $RAY_ADDRESS --workdir {base / 'slots'}"
    steps = [
        {"cmd": fanout, "cwd": str(project)},
        {"cmd": "git add -A && git commit -qm 'fanout results'", "cwd": str(project)},
        {"cmd": f"{fanout} -S 'recipes.pc.k=7,8' -n sw", "cwd": str(project)},
        {"cmd": f"{fanout} -S 'recipes.pt.k=-1' -n bad", "cwd": str(project)},
        # no --address: a local Ray instance of its own (still inside the namespace)
        {"cmd": f"env -u RAY_ADDRESS {POSEZOO} fanout --workdir {base / 'alone-slots'}", "cwd": str(alone)},
    ]
    (base / "steps.json").write_text(json.dumps(steps))
    subprocess.run(["unshare", "-rn", sys.executable, "-m", "tests.fanout.cluster", str(base / "steps.json"), str(base / "result.json")],
                   cwd=REPO, check=True, timeout=900)
    result = json.loads((base / "result.json").read_text())
    assert "error" not in result, result["error"]
    return {"base": base, "project": project, "alone": alone, "result": result, "steps": result["steps"]}


def _summary(project: Path, point: str) -> dict[str, Any]:
    return json.loads((project / ".dvc" / "tmp" / "fanout" / point / "summary.json").read_text())


def test_the_cluster_lives_on_loopback_only(session: dict[str, Any]) -> None:
    result = session["result"]
    assert all(" lo " in line for line in result["interfaces"]), result["interfaces"]
    assert result["listening"], "no listening socket seen: the cluster did not run"
    assert all(addr.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:", "*:", "0.0.0.0:", "[::]:")) for addr in result["listening"])


def test_the_cluster_is_stopped_afterwards(session: dict[str, Any]) -> None:
    left = subprocess.run(["pgrep", "-af", session["result"]["address"]], capture_output=True, text=True, check=False)
    assert left.returncode == 1, f"Ray processes still running: {left.stdout}"


def test_fanout_runs_every_stage_on_the_cluster_and_dvc_restores_them(session: dict[str, Any]) -> None:
    project, first = session["project"], session["steps"][0]
    assert first["rc"] == 0, first["stderr"][-3000:]
    summary = _summary(project, "workspace")
    assert set(summary["stages"]) == {"prepare@a", "prepare@b", "quantize@a-pc", "quantize@a-pt", "quantize@b-pc", "quantize@b-pt"}
    assert summary["ran_on_coordinator"] == ["report"] and summary["rerun_locally"] == []
    finale = (project / ".dvc" / "tmp" / "fanout" / "workspace" / "finale.log").read_text()
    for stage in summary["stages"]:
        assert f"Stage '{stage}' is cached - skipping run" in finale
    a, b = summary["stages"]["prepare@a"], summary["stages"]["prepare@b"]
    assert a["node"] != b["node"], "two independent stages should run on the two nodes"
    assert a["start"] < b["end"] and b["start"] < a["end"], "and at overlapping times"


def test_the_result_is_dvcs_own_and_equals_a_local_repro(session: dict[str, Any], tmp_path: Path) -> None:
    project = session["project"]
    assert "Data and pipelines are up to date" in run([DVC, "status"], project)
    local = toy_project(tmp_path / "local", None)
    run([DVC, "repro"], local)
    produced = sorted(p.relative_to(local) for p in [*(local / "build").rglob("*"), *(local / "metrics").rglob("*")] if p.is_file())
    assert len(produced) == 13
    for rel in produced:
        assert (project / rel).read_bytes() == (local / rel).read_bytes(), rel


def test_a_sweep_runs_only_the_changed_stages_and_makes_dvc_experiments(session: dict[str, Any]) -> None:
    project, sweep = session["project"], session["steps"][2]
    assert sweep["rc"] == 0, sweep["stderr"][-3000:]
    for point, k in (("sw-1", 7), ("sw-2", 8)):
        summary = _summary(project, point)
        assert set(summary["stages"]) == {"quantize@a-pc", "quantize@b-pc"}, summary["stages"]
        assert summary["rerun_locally"] == [] and summary["ran_on_coordinator"] == ["report"]
    shown = json.loads(run([DVC, "exp", "show", "--json"], project))
    experiments = {e["name"]: e for row in shown for e in (row.get("experiments") or []) for e in [e["revs"][0]]}
    assert set(experiments) >= {"sw-1", "sw-2"}
    for name, k in (("sw-1", 7), ("sw-2", 8)):
        data = experiments[name]["data"]
        assert data["params"]["params.yaml"]["data"]["recipes"]["pc"]["k"] == k
        assert data["metrics"]["metrics/quantize/a-pc.json"]["data"]["scheme"] == "pc"


def test_a_failing_stage_ends_the_command_with_its_log_tail(session: dict[str, Any]) -> None:
    failing = session["steps"][3]
    assert failing["rc"] == 2
    err = failing["stderr"]
    assert "quantize: recipes.pt.k is negative" in err, err[-2000:]
    assert "stage quantize@a-pt failed on" in err and "(node " in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: 2 stage(s) failed on the cluster (quantize@")


def test_without_an_address_fanout_starts_a_local_ray_instance(session: dict[str, Any]) -> None:
    step, alone = session["steps"][4], session["alone"]
    assert step["rc"] == 0, step["stderr"][-3000:]
    summary = _summary(alone, "workspace")
    assert set(summary["stages"]) == set(_summary(session["project"], "workspace")["stages"])
    assert {s["node"] for s in summary["stages"].values()} != {"local"} and summary["rerun_locally"] == []
    assert "Data and pipelines are up to date" in run([DVC, "status"], alone)
