"""Push a reproduced zoo to a DVC remote, refusing anything a fresh clone could not pull back.

Publishing is DVC's own ``push`` (content-addressed: a clone at the same commit gets the exact
bytes with ``dvc pull`` or ``dvc artifacts get``); this module adds the checks a user would
otherwise learn about from a broken clone: ``artifacts/dvc.yaml`` matches the params, every
stage is up to date with ``dvc.lock`` (else the remote would receive outputs no commit
describes), and a remote is configured. The run-cache goes too (:mod:`.runcache`), so a teammate's
``dvc repro`` restores stages this machine ran instead of re-running them. ``dvc artifacts get`` finds an artifact through a git tag
``artifacts=<name>@<semver>`` (GTO's format for ``artifacts:<name>``), so ``--version`` registers
the published commit under one.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from pipeline.errors import PosezooError
from pipeline.params import load_params
from pipeline.publish.artifacts import (
    ARTIFACTS_FILE,
    expected_artifacts,
    full_name,
    stale_artifacts,
)
from pipeline.publish.runcache import push_run_cache

log = logging.getLogger("posezoo.publish")


def _repo(root: Path) -> Any:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError as err:
        raise PosezooError(f"{root}: not a DVC project; run from the project root") from err


def _uncommitted(root: Path) -> list[str]:
    """Pipeline files whose working copy differs from git HEAD (a version tag would not describe them)."""
    proc = subprocess.run(["git", "status", "--porcelain", "--", "dvc.yaml", "dvc.lock", "params.yaml", str(ARTIFACTS_FILE)], cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise PosezooError(f"{root}: not a git repository ({proc.stderr.strip()[:200]}); versions are git tags, so run `git init` and commit first")
    return [line[3:] for line in proc.stdout.splitlines()]


def register_version(root: Path, names: list[str], version: str) -> list[str]:
    """Register HEAD as ``<name>@<version>`` for every artifact name (``artifacts:<name>``; GTO
    tags it ``artifacts=<name>@<version>``, which ``dvc artifacts get`` resolves); returns the
    names with their version. Push the tags with ``git push --tags``."""
    import gto.api
    from gto.exceptions import GTOException

    tags = []
    for name in names:
        try:
            gto.api.register(str(root), name, ref="HEAD", version=version, message=f"posezoo publish {version}", author="posezoo", author_email="posezoo@localhost")
        except GTOException as err:
            raise PosezooError(f"{root}: cannot register {name}@{version} ({str(err).splitlines()[0]}); pick a new, higher semver version") from err
        tags.append(f"{name}@{version}")
    return tags


def publish(root: Path, remote: str | None, version: str | None = None) -> dict[str, Any]:
    """Check the project at ``root`` and ``dvc push`` its outputs; with ``version`` (semver,
    e.g. ``v1.0.0``) also register every artifact at git HEAD. Returns what was published."""
    from dvc.exceptions import DvcException

    params_path = Path(root) / "params.yaml"
    params = load_params(params_path)
    stale = stale_artifacts(Path(root) / ARTIFACTS_FILE, params, params_path)
    if stale:
        raise PosezooError(
            f"{Path(root) / ARTIFACTS_FILE}: artifacts out of date with params.yaml ({', '.join(stale[:4])}{' …' if len(stale) > 4 else ''}); "
            f"run `posezoo publish --sync-artifacts` and commit {ARTIFACTS_FILE}"
        )
    if version is not None:
        dirty = _uncommitted(Path(root))
        if dirty:
            raise PosezooError(f"{root}: {', '.join(dirty)} differ from git HEAD; commit them before publishing version {version}")
    repo = _repo(root)
    try:
        if not remote and not repo.config["core"].get("remote"):
            raise PosezooError(f"{root}: no DVC remote configured; add one with `dvc remote add -d zoo <url or directory>` or pass --remote")
        changed = repo.status()
        if changed:
            raise PosezooError(f"{root}: {len(changed)} stage(s) differ from dvc.lock ({', '.join(sorted(changed)[:3])}); run `dvc repro` before publishing")
        log.info("pushing to DVC remote %s", remote or repo.config["core"]["remote"])
        pushed = repo.push(remote=remote)
        # the run-cache too, with the objects DVC's run-cache push leaves out (metrics), so another
        # machine's `dvc repro --pull` / `dvc exp run --pull` restores those runs instead of re-running them
        metrics_objects = push_run_cache(repo, remote)
    except DvcException as err:
        raise PosezooError(f"{root}: dvc push failed ({str(err).splitlines()[0]}); check the remote's URL and credentials") from err
    finally:
        repo.close()
    artifacts = expected_artifacts(params, params_path)
    for name, entry in artifacts.items():
        files = sorted(p.name for p in (Path(root) / ARTIFACTS_FILE.parent / entry["path"]).iterdir())
        log.info("artifact %s: %s", full_name(name), ", ".join(files))
    names = [full_name(name) for name in artifacts]
    tags = register_version(Path(root), names, version) if version is not None else []
    return {"remote": remote, "pushed_files": pushed, "run_cache_uncached_objects": metrics_objects, "artifacts": sorted(names), "tags": tags}
