"""Recommend, per target, the most accurate variant of a model that the target runs and holds."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.errors import PosezooError
from pipeline.recommend import recommend

HELP = "pick the best variant of a model for each target (accelerator constraints + memory fit)"
log = logging.getLogger("posezoo.recommend")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--evaluate-dir", type=Path, default=Path("metrics/evaluate"), help="metrics of `posezoo evaluate` (<model>-*.json)")
    parser.add_argument("--footprint-dir", type=Path, default=Path("metrics/footprint"), help="metrics of `posezoo footprint` (same file names)")
    parser.add_argument("--out", required=True, type=Path, help="JSON metrics output")


def run(args: argparse.Namespace) -> None:
    pairs = []
    for path in sorted(args.evaluate_dir.glob(f"{args.model}-*.json")):
        footprint = args.footprint_dir / path.name
        if not footprint.is_file():
            raise PosezooError(f"{footprint}: no footprint for {path.name}; run `posezoo footprint` on that variant first")
        pairs.append((json.loads(path.read_text()), json.loads(footprint.read_text())))
    result = recommend(args.model, pairs)
    write_json(args.out, result)
    for name, choice in result["targets"].items():
        log.info("%s on %s: %s (%s)", args.model, name, choice["recommended"] or "nothing eligible", choice["constraint"])
