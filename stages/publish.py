"""Publish the zoo: push every pipeline output to a DVC remote, so `dvc pull` or
`dvc artifacts get <repo> artifacts:<name>` in a fresh clone gets the exact bytes.

Not a DVC stage (it changes no output): run it after `dvc repro`, then push the git commit.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.params import load_params
from pipeline.publish.artifacts import ARTIFACTS_FILE, sync_artifacts
from pipeline.publish.push import publish

HELP = "push the reproduced models, metrics and cards to a DVC remote (after `dvc repro`)"
log = logging.getLogger("posezoo.publish")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", default=None, help="DVC remote name (default: the project's default remote)")
    parser.add_argument(
        "--version", default=None,
        help="also register HEAD as artifacts:<name>@VERSION for every artifact (semver, e.g. v1.0.0), so `dvc artifacts get` finds them; push with `git push --tags`",
    )
    parser.add_argument("--root", type=Path, default=Path("."), help=f"project root (dvc.yaml, params.yaml, {ARTIFACTS_FILE})")
    parser.add_argument(
        "--sync-artifacts", action="store_true", help=f"rewrite {ARTIFACTS_FILE} from params.yaml (one artifact per int8 variant) and stop"
    )


def run(args: argparse.Namespace) -> None:
    if args.sync_artifacts:
        params_path = args.root / "params.yaml"
        changed = sync_artifacts(args.root / ARTIFACTS_FILE, load_params(params_path), params_path)
        log.info("%s %s", ARTIFACTS_FILE, f"updated: {', '.join(changed)}" if changed else "already in sync")
        return
    summary = publish(args.root, args.remote, args.version)
    log.info("published %d file(s) and the run-cache (+%d metrics objects); artifacts: %s", summary["pushed_files"], summary["run_cache_uncached_objects"], ", ".join(summary["artifacts"]))
    if summary["tags"]:
        log.info("registered %d artifact versions as git tags (push them: git push --tags)", len(summary["tags"]))
