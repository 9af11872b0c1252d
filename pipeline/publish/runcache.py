"""Push what another machine needs to restore a stage from DVC's run-cache, metrics included.

``dvc push --run-cache`` pushes the run entries, but of the objects they name only those of the
workspace's cached outputs: not the objects of ``cache: false`` outputs (the metrics, the plots),
nor those of runs the workspace no longer shows (an earlier sweep point). DVC restores a
run-cached stage by checking every output of the entry out as a cached one, pulling its objects
(``dvc repro --pull`` / ``dvc exp run --pull``), so another machine finds them missing and re-runs
the stage. DVC commits them to the local cache when it saves a run (``StageCache.save``); this
pushes them beside the entries. Hand-written because DVC has no option for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("posezoo.publish")


def with_files(odb: Any, objs: Iterable[Any]) -> set[Any]:
    """``objs`` present in ``odb``, with the files of the directories among them."""
    from dvc_data.hashfile.tree import Tree

    found = {h for h in objs if odb.exists(h.value)}
    return found | {oid for h in found if h.isdir for _, _, oid in Tree.load(odb, h)}


def uncached_objects(stages: Iterable[Any]) -> set[Any]:
    """Hash infos of the ``cache: false`` outputs of ``stages`` that are in the local cache."""
    found: set[Any] = set()
    for stage in stages:
        for out in stage.outs:
            if not out.use_cache and out.hash_info:
                found |= with_files(out.cache, [out.hash_info])
    return found


def run_cache_objects(repo: Any) -> set[Any]:
    """Every object the local run-cache entries name (cached outputs or not) that is in the local
    cache, found with DVC's own reading of the entries."""
    runs = Path(repo.cache.legacy.path) / "runs"
    entries = [(p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file()]
    used = repo.stage_cache.get_used_objs(entries)
    return set().union(*(with_files(odb or repo.cache.local, objs) for odb, objs in used.items())) if used else set()


def push_run_cache(repo: Any, remote: str | None) -> int:
    """``dvc push --run-cache`` plus the objects its entries name; returns how many objects the
    second part sent (0 when the remote had them all)."""
    repo.push(remote=remote, run_cache=True)
    objs = run_cache_objects(repo)
    return len(repo.cloud.push(objs, remote=remote).transferred) if objs else 0
