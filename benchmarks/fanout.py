"""`posezoo fanout` on a local Ray cluster against a plain local `dvc repro`, in the same run.

The pipeline measured is a documented subset of the default one that fits a benchmark run on this
2-core machine: every stage of ONE model (default hand_landmark_lite: fetch, calibrate, calibrate-roi,
convert, optimize with the repository's recipe search, quantize / evaluate / footprint / benchmark
for both schemes × three formats, the float footprint and benchmark, recommend, cards) in a scratch
project made like the integration tests' (tests/integration/conftest.py). Each run starts from a
fresh project, DVC cache, run-cache and remote (the downloaded wheels stay cached):

- ``local``: ``dvc repro``;
- ``N=1`` / ``N=2``: ``posezoo fanout`` on a cluster of N nodes × 1 CPU on 127.0.0.1 inside a
  network namespace of its own (tests/fanout/cluster.py; the head advertises ``bench``), wall time
  including DVC's final restore on the coordinator.

It prints wall seconds and the ratio to ``local``, then a paper estimate for 1, 2, 4, 8 and 16
workers: list scheduling (critical-path first) of the cluster stages' measured task times (clone,
pull, run, push included) over the subset's DAG read from DVC's index, plus the coordinator's
final step, measured. On 2 cores, N=2 shares the machine with the coordinator and DVC.

    python benchmarks/fanout.py [--model hand_landmark_lite] [--out benchmarks/fanout.json]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import chdir
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.conftest import DVC, make_project, run  # noqa: E402

WORKERS = (1, 2, 4, 8, 16)


def project(root: Path, model: str) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    root.mkdir(parents=True)
    make_project(root, {model: params["models"][model]}, search=params["quantize"]["search"])
    run(["git", "config", "user.email", "bench@posezoo"], root)
    run(["git", "config", "user.name", "posezoo benchmark"], root)
    run([DVC, "remote", "add", "-q", "-d", "shared", str(root.parent / f"{root.name}-remote")], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "benchmark project"], root)
    return root


def local_run(root: Path) -> float:
    started = time.perf_counter()
    run([DVC, "repro"], root)
    return time.perf_counter() - started


def fanout_run(root: Path, nodes: int) -> tuple[float, dict[str, Any]]:
    steps = root.parent / f"steps-{nodes}.json"
    result = root.parent / f"result-{nodes}.json"
    posezoo = Path(sys.executable).parent / "posezoo"
    steps.write_text(json.dumps([{"cmd": f"{posezoo} fanout --address $RAY_ADDRESS --workdir {root.parent / f'slots-{nodes}'}", "cwd": str(root)}]))
    subprocess.run(["unshare", "-rn", sys.executable, "-m", "tests.fanout.cluster", str(steps), str(result), str(nodes), "bench"], cwd=ROOT, check=True)
    outcome = json.loads(result.read_text())
    step = outcome["steps"][0] if outcome.get("steps") else None
    if "error" in outcome or step is None or step["rc"]:
        raise SystemExit(f"fanout with {nodes} node(s) failed: {outcome.get('error') or (step or {}).get('stderr', '')[-2000:]}")
    summary = json.loads((root / ".dvc" / "tmp" / "fanout" / "workspace" / "summary.json").read_text())
    return step["seconds"], summary


def dag(root: Path) -> dict[str, tuple[str, ...]]:
    """Each stage's direct upstream stages, from DVC's index."""
    from dvc.repo import Repo

    with chdir(root), Repo(str(root)) as repo:
        graph = repo.index.graph
        return {s.addressing: tuple(u.addressing for u in graph.successors(s)) for s in graph.nodes}


def makespan(seconds: dict[str, float], upstream: dict[str, tuple[str, ...]], workers: int) -> float:
    """List scheduling of ``seconds`` over the DAG on ``workers``, longest remaining path first."""
    below: dict[str, list[str]] = {s: [] for s in seconds}
    for stage in seconds:
        for u in upstream.get(stage, ()):
            if u in below:
                below[u].append(stage)
    tail: dict[str, float] = {}

    def remaining(stage: str) -> float:
        if stage not in tail:
            tail[stage] = seconds[stage] + max((remaining(d) for d in below[stage]), default=0.0)
        return tail[stage]

    waiting = {s: sum(u in seconds for u in upstream.get(s, ())) for s in seconds}
    ready = [(-remaining(s), s) for s, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < workers:
            _, stage = heapq.heappop(ready)
            heapq.heappush(running, (now + seconds[stage], stage))
        now, stage = heapq.heappop(running)
        for d in below[stage]:
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(ready, (-remaining(d), d))
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hand_landmark_lite")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="posezoo-fanout-bench-") as tmp:
        base = Path(tmp)
        rows: dict[str, float] = {"local": local_run(project(base / "local", args.model))}
        summaries = {}
        for nodes in (1, 2):
            rows[f"fanout N={nodes}"], summaries[nodes] = fanout_run(project(base / f"n{nodes}", args.model), nodes)
        upstream = dag(base / "n2")
    times = {s: r["end"] - r["start"] for s, r in summaries[2]["stages"].items()}
    finale = summaries[2]["finale_seconds"]
    estimate = {w: makespan(times, upstream, w) + finale for w in WORKERS}
    print(f"\nSubset: every stage of {args.model} ({len(upstream)} stages; {len(times)} on the cluster, the rest on the coordinator)")
    print(f"{'run':<14} {'wall s':>8} {'local / run':>12}")
    for name, seconds in rows.items():
        print(f"{name:<14} {seconds:8.1f} {rows['local'] / seconds:12.2f}")
    print(f"\nPaper estimate (measured N=2 task times, list scheduling over the DAG, + {finale:.0f} s coordinator finale)")
    print(f"sum of task times {sum(times.values()):.0f} s; critical path {makespan(times, upstream, len(times)):.0f} s")
    print(f"{'workers':<8} {'makespan s':>11} {'speed-up vs 1':>14}")
    for w, seconds in estimate.items():
        print(f"{w:<8} {seconds:11.0f} {estimate[1] / seconds:14.2f}")
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "runs": rows, "task_seconds": times, "finale_seconds": finale, "estimate": estimate}, indent=1))


if __name__ == "__main__":
    main()
