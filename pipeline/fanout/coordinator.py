"""``posezoo fanout``: submit a revision's out-of-date stages to Ray, then let DVC restore them.

For each sweep point the coordinator plans the stages (:mod:`.plan`), pushes the up-to-date
outputs the submitted stages read, submits one Ray task per worker stage with its upstream tasks'
ObjectRefs as arguments (Ray starts a task when its upstream tasks are done, and fails it when one
of them failed), waits with a progress bar, writes each stage's log, and then

- without ``-S``: writes the workers' lock entries into dvc.lock, fetches their outputs and the
  remote run-cache into the local cache, and runs ``dvc repro``: DVC checks every stage and
  restores the submitted ones ("Stage ... is cached - skipping run") and runs the coordinator
  stages (cards, recommend);
- with ``-S``: fetches the same and runs ``dvc exp run --temp -n NAME -S ...`` for the point, so
  the experiment is DVC's own (``dvc exp show`` lists it with its params and metrics).

The final step runs without ``--pull`` on purpose: ``dvc repro --pull`` restores an unchanged
stage with ``dvc pull``, which skips ``cache: false`` outputs (the metrics), whereas a run-cache
restore from the local cache checks every output out.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from pipeline.atomic import write_json, write_text
from pipeline.errors import PosezooError
from pipeline.fanout.plan import (
    BENCH,
    COORDINATOR,
    Point,
    StageJob,
    clone_point,
    fresh_inputs,
    plan,
    sweep_points,
)
from pipeline.fanout.worker import (
    LOG_TAIL,
    StageFailed,
    Task,
    merge_lock,
    run_stage,
    tool_env,
)

log = logging.getLogger("posezoo.fanout")
RAN = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


@dataclass
class Settings:
    """The command line of ``posezoo fanout``."""

    root: Path
    address: str | None = None
    set_params: Sequence[str] = ()
    name: str | None = None
    remote: str | None = None
    git_url: str | None = None
    workdir: Path | None = None
    bench: Sequence[str] = ("benchmark", "benchmark-float")
    node_ip: str | None = None
    logs: Path = field(default=Path(".dvc/tmp/fanout"))


def fanout(settings: Settings) -> list[dict[str, Any]]:
    """Run the revision's own params (when not reproduced), then every sweep point's stages at once."""
    root = settings.root.resolve()
    rev = _clean_revision(root)
    remote, remote_config = _remote(root, settings.remote)
    points = sweep_points(settings.set_params, settings.name)
    import ray

    _connect(ray, settings)
    try:
        bench_nodes = ray.cluster_resources().get("bench", 0) > 0
        run = _Run(ray, settings, root, rev, remote, remote_config, bench_nodes)
        # A sweep starts from the revision's reproduced outputs (what its unchanged stages restore).
        summaries = run.points([Point(())]) if points[0].overrides else []
        return summaries + run.points(points)
    finally:
        ray.shutdown()


@dataclass
class _Batch:
    """One sweep point's stages on the cluster and their results."""

    point: Point
    jobs: list[StageJob]
    logs: Path
    planned: int
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Run:
    ray: Any
    settings: Settings
    root: Path
    rev: str
    remote: str
    remote_config: dict[str, Any]
    bench_nodes: bool

    def points(self, points: Sequence[Point]) -> list[dict[str, Any]]:
        """Plan every point, run all their cluster stages together, then let DVC restore each point."""
        batches = [self._plan(p) for p in points]
        self._submit_and_wait(batches)
        return [self._finish(b) for b in batches]

    def _plan(self, point: Point) -> _Batch:
        with tempfile.TemporaryDirectory(prefix="posezoo-fanout-") as tmp:
            point_root = clone_point(self.root, self.rev, point, Path(tmp) / "point") if point.overrides else self.root
            jobs = plan(self.root, point_root, self.settings.bench, self.bench_nodes)
        logs = (self.root / self.settings.logs / re.sub(r"[^\w.=,-]+", "_", point.label())).resolve()
        if not self.bench_nodes and any(j.name.split("@")[0] in self.settings.bench for j in jobs):
            log.warning("no Ray node advertises the 'bench' resource; the benchmark stages run on this machine")
        batch = _Batch(point, [j for j in jobs if j.where != COORDINATOR], logs, len(jobs))
        fresh = fresh_inputs(batch.jobs)
        if fresh:
            _dvc(["push", "-r", self.remote, *fresh], self.root, logs / "push.log")
        log.info("%s: %d stage(s) to bring up to date, %d on the cluster", point.label(), len(jobs), len(batch.jobs))
        return batch

    def _submit_and_wait(self, batches: Sequence[_Batch]) -> None:
        from ray.exceptions import RayTaskError

        task_fn = self.ray.remote(run_stage)
        workdir = str(self.settings.workdir or Path(tempfile.gettempdir()) / "posezoo-fanout")
        owner: dict[Any, tuple[_Batch, str]] = {}
        for batch in batches:
            refs: dict[str, Any] = {}
            for job in batch.jobs:
                task = Task(job.name, self.rev, self.settings.git_url or str(self.root), workdir, self.remote, self.remote_config, batch.point.overrides, job.upstream)
                options: dict[str, Any] = {"num_cpus": 1, "name": f"{job.name} ({batch.point.label()})"}
                if job.where == BENCH:
                    options["resources"] = {"bench": 1}
                refs[job.name] = task_fn.options(**options).remote(task, *(refs[u] for u in job.upstream if u in refs))
                owner[refs[job.name]] = (batch, job.name)
        failed: list[tuple[Path, StageFailed]] = []
        skipped = 0
        pending = list(owner)
        started = time.time()
        try:
            with tqdm(total=len(pending), desc="fanout", unit="stage") as bar:
                while pending:
                    done, pending = self.ray.wait(pending, num_returns=1)
                    batch, name = owner[done[0]]
                    bar.update()
                    try:
                        result = self.ray.get(done[0])
                    except RayTaskError as err:
                        cause = getattr(err, "cause", None)
                        if not isinstance(cause, StageFailed):
                            raise PosezooError(f"stage {name}: Ray task error: {str(err).splitlines()[0]}") from None
                        if cause.stage == name:
                            failed.append((batch.logs / f"{name}.log", cause))
                            write_text(failed[-1][0], cause.log)
                        else:
                            skipped += 1
                        continue
                    batch.results[name] = result
                    batch.seconds = time.time() - started
                    write_text(batch.logs / f"{name}.log", result.pop("log"))
                    bar.set_postfix_str(name)
        except KeyboardInterrupt:
            for ref in pending:
                self.ray.cancel(ref, force=True)
            print(f"fanout: interrupted; cancelled {len(pending)} stage task(s). What finished is on the remote: rerun to resume.", file=sys.stderr)
            raise SystemExit(130) from None
        if failed:
            for path, err in failed:
                print(f"--- {err}; last lines of {path}:\n{err.log[-LOG_TAIL:].rstrip()}\n---", file=sys.stderr)
            blocked = f"; {skipped} stage(s) not run because of them" if skipped else ""
            names = ", ".join(err.stage for _, err in failed)
            raise PosezooError(f"{len(failed)} stage(s) failed on the cluster ({names}){blocked}; fix the stage and rerun `posezoo fanout` (finished stages are restored)")

    def _finish(self, batch: _Batch) -> dict[str, Any]:
        """DVC restores the point: ``dvc repro`` (the revision's params) or ``dvc exp run --temp -S``."""
        point, results = batch.point, batch.results
        if not batch.planned and not point.overrides:
            log.info("%s: every stage is up to date", point.label())
            return {"point": point.label(), "submitted": 0, "ran_on_coordinator": [], "stages": {}}
        finale_started = time.time()
        _fetch(self.root, self.remote, results)
        if point.overrides:
            name = ["-n", point.name] if point.name else []
            overrides = [a for o in point.overrides for a in ("-S", o)]
            output = _dvc(["exp", "run", "--temp", *name, *overrides], self.root, batch.logs / "finale.log")
        else:
            merge_lock(self.root / "dvc.lock", {name: r["lock"] for name, r in results.items()})
            output = _dvc(["repro"], self.root, batch.logs / "finale.log")
        ran_here = RAN.findall(output)
        rerun = sorted(set(ran_here) & set(results))
        if rerun:
            log.warning("%s: DVC re-ran %s on this machine instead of restoring it", point.label(), ", ".join(rerun))
        summary = {
            "point": point.label(),
            "overrides": list(point.overrides),
            "submitted": len(batch.jobs),
            "ran_on_coordinator": ran_here,
            "rerun_locally": rerun,
            "cluster_seconds": round(batch.seconds, 2),
            "finale_seconds": round(time.time() - finale_started, 2),
            "stages": {n: {k: r[k] for k in ("node", "host", "slot", "start", "end", "restored")} for n, r in results.items()},
        }
        write_json(batch.logs / "summary.json", summary)
        log.info("%s: %d stage(s) on the cluster (%d restored from the run-cache); on this machine: %s", point.label(), len(results),
                 sum(r["restored"] for r in results.values()), ", ".join(ran_here) or "nothing")
        return summary


def _fetch(root: Path, remote: str, results: dict[str, dict[str, Any]]) -> None:
    """The remote run-cache and the submitted stages' outputs (cached or not) into the local cache."""
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo

    from pipeline.publish.runcache import with_files

    objs = {HashInfo(o.get("hash", "md5"), o["md5"]) for r in results.values() for o in r["lock"].get("outs", []) if "md5" in o}
    with Repo(str(root)) as repo:
        repo.stage_cache.pull(remote)
        if objs:
            repo.cloud.pull(objs, remote=remote)  # a directory's .dir object, not its files:
            repo.cloud.pull(with_files(repo.cache.local, objs) - objs, remote=remote)


def _dvc(args: list[str], root: Path, log_path: Path) -> str:
    """Run ``dvc args`` in the workspace, its output in ``log_path``; a failure is a one-line error."""
    dvc = str(Path(sys.executable).parent / "dvc")
    proc = subprocess.run([dvc, *args], cwd=root, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    write_text(log_path, proc.stdout)
    if proc.returncode:
        tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        raise PosezooError(f"`dvc {' '.join(args[:2])}` failed in {root}: {tail} (full output: {log_path})")
    return proc.stdout


def _clean_revision(root: Path) -> str:
    if not (root / ".dvc").is_dir():
        raise PosezooError(f"{root}: not a DVC project; run fanout from the project root (or pass --root)")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True).stdout
    if dirty.strip():
        raise PosezooError(f"{root}: uncommitted changes ({dirty.split()[1]} ...); fanout runs a committed revision: commit or stash them first")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _remote(root: Path, name: str | None) -> tuple[str, dict[str, Any]]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remotes = dict(repo.config.get("remote", {}))
        name = name or repo.config.get("core", {}).get("remote")
    if not name or name not in remotes:
        raise PosezooError(f"{root}: no DVC remote {name or '(default)'}; add a shared one: `dvc remote add -d NAME URL` (every node must reach it)")
    return name, dict(remotes[name])


def _connect(ray: Any, settings: Settings) -> None:
    """Join the cluster at ``--address``, or start a local Ray instance on 127.0.0.1."""
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if settings.address:
        host = settings.address.split("://")[-1].rsplit(":", 1)[0]
        node_ip = settings.node_ip or ("127.0.0.1" if host in ("127.0.0.1", "localhost") else None)
        ray.init(address=settings.address, _node_ip_address=node_ip, **quiet)
    else:
        ray.init(_node_ip_address=settings.node_ip or "127.0.0.1", include_dashboard=False, **quiet)
    log.info("Ray cluster: %s", json.dumps({k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}))
