"""One stage on one Ray worker: a reused clone of the revision, DVC restores, runs and pushes it.

Each worker slot (one per concurrently running task on a node) keeps a clone of the repository
and its own DVC cache under ``workdir/slots/<n>``, reused task after task; a lock file makes a
slot one task's at a time. For a stage the task

1. checks the revision out (``git clean`` leaves only tracked files) and applies the sweep point's
   ``-S`` overrides to params.yaml with DVC's own hydra code (what ``dvc exp run -S`` does);
2. writes the lock entries its upstream tasks returned into dvc.lock, so that ``dvc pull`` of the
   upstream stages restores the outputs those tasks pushed (up-to-date upstream stages keep the
   committed entries, whose outputs the coordinator pushed);
3. runs ``dvc repro --single-item --pull <stage>``: DVC restores the stage from the remote
   run-cache when it has run before with the same inputs, else runs it;
4. pushes its outputs and run-cache entry (``dvc push --run-cache``) and the objects of its
   ``cache: false`` outputs, which ``dvc push`` skips but a run-cache restore needs (DVC restores
   a run-cached stage's outputs as cached ones, iterative/dvc run-cache semantics);
5. returns its lock entry, timings and the node it ran on.

Hand-written because no library runs a DVC stage as a remote task (DVC has no remote executor
since ``dvc machine`` was removed in iterative/dvc#9837).
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
from contextlib import chdir, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from pipeline.atomic import write_text

#: Characters of a failed stage's log shown in the error.
LOG_TAIL = 3000
#: At most this much of a stage's log travels back to the coordinator.
LOG_LIMIT = 1_000_000


@dataclass(frozen=True)
class Task:
    """What a worker needs to run one stage of one sweep point."""

    stage: str
    rev: str
    git_url: str
    workdir: str
    remote: str
    remote_config: Mapping[str, Any]
    overrides: tuple[str, ...] = ()
    upstream: tuple[str, ...] = field(default=())


class StageFailed(Exception):
    """A stage's command failed on a worker (its log tail and the node it ran on)."""

    def __init__(self, stage: str, host: str, node: str, log: str) -> None:
        super().__init__(f"stage {stage} failed on {host} (node {node[:12]})")
        self.stage, self.host, self.node, self.log = stage, host, node, log

    def __reduce__(self) -> tuple[Any, ...]:
        return (StageFailed, (self.stage, self.host, self.node, self.log))


def run_stage(task: Task, *upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``task.stage`` in a slot clone (see the module docstring); ``upstream`` are the results
    of the tasks of its upstream stages (Ray waits for them before starting this one)."""
    node = _node_id()
    host = socket.gethostname()
    started = time.time()
    log: list[str] = []
    with _slot(Path(task.workdir)) as slot:
        clone = slot / "repo"
        try:
            _checkout(task, clone, log)
            _configure(clone, slot / "cache", task)
            _apply(task, clone, upstream)
            if task.upstream:
                _dvc(["pull", *task.upstream], clone, log)
            _dvc(["repro", "--single-item", "--pull", task.stage], clone, log)
            _dvc(["push", "--run-cache", task.stage], clone, log)
            pushed = _push_uncached(clone, task)
            entry = (yaml.safe_load((clone / "dvc.lock").read_text()) or {}).get("stages", {}).get(task.stage)
            if entry is None:
                raise RuntimeError(f"dvc.lock has no entry for {task.stage} after `dvc repro`")
        except (subprocess.CalledProcessError, RuntimeError, OSError) as err:
            log.append(f"\n{type(err).__name__}: {err}\n")
            raise StageFailed(task.stage, host, node, "".join(log)[-LOG_LIMIT:]) from None
    text = "".join(log)
    return {
        "stage": task.stage,
        "node": node,
        "host": host,
        "slot": slot.name,
        "start": started,
        "end": time.time(),
        "restored": f"Running stage '{task.stage}'" not in text,
        "uncached_objects": pushed,
        "lock": entry,
        "log": text[-LOG_LIMIT:],
    }


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


@contextmanager
def _slot(workdir: Path) -> Iterator[Path]:
    """The first free slot directory under ``workdir/slots`` (a new one if all are busy)."""
    slots = workdir / "slots"
    slots.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        handle = open(slots / f"{n}.lock", "w")  # noqa: SIM115 - held for the task's duration
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            n += 1
            continue
        try:
            path = slots / str(n)
            path.mkdir(exist_ok=True)
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return


def tool_env() -> dict[str, str]:
    """This interpreter's environment with its scripts (dvc, posezoo) first on PATH, so that DVC
    finds ``posezoo`` for the stage commands whether or not the venv is activated."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}


def _run(cmd: list[str], cwd: Path, log: list[str]) -> None:
    log.append(f"$ {' '.join(cmd)}\n")
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    log.append(proc.stdout)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def _dvc(args: list[str], clone: Path, log: list[str]) -> None:
    _run([str(Path(sys.executable).parent / "dvc"), *args], clone, log)


def _checkout(task: Task, clone: Path, log: list[str]) -> None:
    """``clone`` at ``task.rev`` with nothing but tracked files (outputs of an earlier task go)."""
    if not (clone / ".git").is_dir():
        _run(["git", "clone", "--quiet", "--no-checkout", task.git_url, str(clone)], clone.parent, log)
    have = subprocess.run(["git", "cat-file", "-e", f"{task.rev}^{{commit}}"], cwd=clone, capture_output=True, check=False)
    if have.returncode:
        _run(["git", "fetch", "--quiet", task.git_url, task.rev], clone, log)
    _run(["git", "checkout", "--quiet", "--force", "--detach", task.rev], clone, log)
    _run(["git", "clean", "-ffdxq"], clone, log)


def _configure(clone: Path, cache: Path, task: Task) -> None:
    """The slot's cache and the shared remote, in the clone's local (untracked) DVC config."""
    from dvc.config import Config

    with Config(dvc_dir=str(clone / ".dvc")).edit("local") as conf:
        conf["cache"]["dir"] = str(cache)
        conf["core"]["remote"] = task.remote
        conf["remote"][task.remote] = dict(task.remote_config)


def _apply(task: Task, clone: Path, upstream: tuple[Mapping[str, Any], ...]) -> None:
    """The sweep point's params and the upstream tasks' lock entries."""
    if task.overrides:
        from dvc.utils.hydra import apply_overrides

        apply_overrides(clone / "params.yaml", list(task.overrides))
    if upstream:
        merge_lock(clone / "dvc.lock", {r["stage"]: r["lock"] for r in upstream})


def merge_lock(path: Path, entries: Mapping[str, Any]) -> None:
    """Write lock ``entries`` (stage name -> entry, as DVC wrote them on a worker) into ``path``."""
    if not entries:
        return
    lock = yaml.safe_load(path.read_text()) if path.is_file() else {"schema": "2.0", "stages": {}}
    lock.setdefault("stages", {}).update(entries)
    write_text(path, yaml.safe_dump(lock, sort_keys=False))


def _push_uncached(clone: Path, task: Task) -> list[str]:
    """Push the objects of the stage's ``cache: false`` outputs; returns their hashes."""
    from dvc.repo import Repo

    from pipeline.publish.runcache import uncached_objects

    with chdir(clone), Repo(str(clone)) as repo:  # DVC resolves stage names from the working directory
        objs = uncached_objects(repo.stage.collect(task.stage))
        if objs:
            repo.cloud.push(objs, remote=task.remote)
    return sorted(str(o.value) for o in objs)
