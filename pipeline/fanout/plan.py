"""Which stages a fan-out submits, in what order and where: read from DVC's own index.

A sweep point's stage graph comes from ``dvc.repo.Repo(...).index`` of a clone with the point's
params (the matrix of a sweep that adds a scheme has more stages); nothing parses dvc.yaml here.
A stage is up to date, and dropped, when DVC reports it unchanged in the workspace and the point
gives it the same command and the same values of every params key it declares, and every stage
upstream of it is up to date too.

Where a stage runs:
- ``coordinator``: stages that read a ``cache: false`` output of another stage (``recommend``,
  ``cards``: they read the metrics folders), and every stage downstream of one. Workers restore
  cached outputs only; the coordinator's final ``dvc repro`` runs (or restores) these.
- ``bench``: stages whose name (before ``@``) is listed as a benchmark; they need the Ray custom
  resource ``bench`` that only the nodes meant for timing advertise (``coordinator`` when no node
  does, with everything downstream of them).
- ``worker``: everything else.
"""

from __future__ import annotations

import subprocess
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from pipeline.errors import PosezooError

WORKER, BENCH, COORDINATOR = "worker", "bench", "coordinator"


@dataclass(frozen=True)
class Point:
    """One sweep point: hydra overrides of params.yaml (none: the revision's own params)."""

    overrides: tuple[str, ...]
    name: str | None = None

    def label(self) -> str:
        return self.name or (" ".join(self.overrides) if self.overrides else "workspace")


@dataclass(frozen=True)
class StageJob:
    """A stage to bring up to date: its direct upstream stages and where it runs."""

    name: str
    upstream: tuple[str, ...]
    where: str


def sweep_points(set_params: Sequence[str], name: str | None) -> list[Point]:
    """The grid of ``-S key=v1,v2`` overrides, with DVC's own parser (as ``dvc exp run --queue``)."""
    if not set_params:
        return [Point(())]
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import OverrideParseException

    by_file = to_path_overrides(list(set_params))
    if set(by_file) != {"params.yaml"}:
        raise PosezooError(f"-S {' '.join(set_params)}: only params.yaml keys can be set (got {', '.join(sorted(by_file))})")
    try:
        sweeps = get_hydra_sweeps(by_file)
    except (InvalidArgumentError, OverrideParseException) as err:
        raise PosezooError(f"-S {' '.join(set_params)}: not a valid override ({err}); use key=value or key=v1,v2 as with `dvc exp run -S`") from None
    return [Point(tuple(s["params.yaml"]), f"{name}-{i}" if name and len(sweeps) > 1 else name) for i, s in enumerate(sweeps, 1)]


def clone_point(root: Path, rev: str, point: Point, dest: Path) -> Path:
    """A data-less clone of ``rev`` at ``dest`` with ``point``'s params (to read its stage graph)."""
    subprocess.run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(root), str(dest)], check=True, capture_output=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", rev], cwd=dest, check=True, capture_output=True)
    if point.overrides:
        from dvc.exceptions import InvalidArgumentError
        from dvc.utils.hydra import apply_overrides

        try:
            apply_overrides(dest / "params.yaml", list(point.overrides))
        except InvalidArgumentError as err:
            raise PosezooError(f"-S {' '.join(point.overrides)}: {err} (a key that params.yaml does not have?)") from None
    return dest


def plan(workspace: Path, point_root: Path, bench: Iterable[str], bench_nodes: bool = True) -> list[StageJob]:
    """Stages of the graph at ``point_root`` that are not up to date in ``workspace``, upstream first."""
    import networkx as nx
    from dvc.repo import Repo

    # DVC names stages relative to the working directory: read each repository from its root
    with chdir(workspace), Repo(str(workspace)) as ws:
        changed = set(ws.status())
        known = {s.addressing: _signature(s) for s in ws.index.stages}
    with chdir(point_root), Repo(str(point_root)) as repo:
        graph = repo.index.graph
        order = list(reversed(list(nx.topological_sort(graph))))
        upstream = {s.addressing: tuple(u.addressing for u in graph.successors(s)) for s in order}
        reads_uncached = {s.addressing for s in order if any(_overlaps(d, o) for u in graph.successors(s) for o in u.outs if not o.use_cache for d in s.deps)}
        signatures = {s.addressing: _signature(s) for s in order}
    bench = set(bench)
    fresh: set[str] = set()
    where: dict[str, str] = {}
    jobs = []
    for name, above in upstream.items():
        if name not in changed and known.get(name) == signatures[name] and all(u in fresh for u in above):
            fresh.add(name)
            continue
        benchmark = name.split("@")[0] in bench
        if name in reads_uncached or (benchmark and not bench_nodes) or any(where.get(u) == COORDINATOR for u in above):
            where[name] = COORDINATOR
        else:
            where[name] = BENCH if benchmark else WORKER
        jobs.append(StageJob(name, above, where[name]))
    return jobs


def _signature(stage: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(command, declared params and their values): what a sweep point can change in a stage."""
    from dvc.dependency.param import ParamsDependency

    values: list[tuple[str, str]] = []
    for dep in stage.deps:
        if isinstance(dep, ParamsDependency):
            values += sorted((f"{dep.def_path}:{k}", repr(v)) for k, v in dep.read_params().items())
    return str(stage.cmd), tuple(values)


def _overlaps(dep: Any, out: Any) -> bool:
    a, b = str(dep.fs_path), str(out.fs_path)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def fresh_inputs(jobs: Sequence[StageJob]) -> list[str]:
    """Up-to-date stages whose outputs submitted stages read (they must be on the remote)."""
    submitted = {j.name for j in jobs}
    return sorted({u for j in jobs if j.where != COORDINATOR for u in j.upstream if u not in submitted})
