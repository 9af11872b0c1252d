"""Recommend, per target, the most accurate variant of a model that the target runs and holds.

The candidates are the variants of the current params (``quantize.schemes`` × ``quantize.formats``,
:func:`~pipeline.quantize.expected_variants`, as the cards), never whatever metrics files a
removed scheme or format left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.errors import PosezooError
from pipeline.params import load_params
from pipeline.quantize import expected_variants, variant_key
from pipeline.recommend import recommend

HELP = "pick the best variant of a model for each target (accelerator constraints + memory fit)"
log = logging.getLogger("posezoo.recommend")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file naming the variants (quantize.schemes, quantize.formats)")
    parser.add_argument("--evaluate-dir", type=Path, default=Path("metrics/evaluate"), help="metrics of `posezoo evaluate` (<model>-<scheme>-<format>.json)")
    parser.add_argument("--footprint-dir", type=Path, default=Path("metrics/footprint"), help="metrics of `posezoo footprint` (same file names)")
    parser.add_argument("--out", required=True, type=Path, help="JSON metrics output")


def run(args: argparse.Namespace) -> None:
    pairs = []
    for scheme, fmt in expected_variants(load_params(args.params), args.params):
        name = f"{variant_key(args.model, scheme, fmt)}.json"
        evaluate, footprint = args.evaluate_dir / name, args.footprint_dir / name
        if not evaluate.is_file():
            raise PosezooError(f"{evaluate}: no evaluation of {name} (a variant of the current params); run `posezoo evaluate` on that variant first")
        if not footprint.is_file():
            raise PosezooError(f"{footprint}: no footprint for {name}; run `posezoo footprint` on that variant first")
        pairs.append((json.loads(evaluate.read_text()), json.loads(footprint.read_text())))
    result = recommend(args.model, pairs)
    write_json(args.out, result)
    for name, choice in result["targets"].items():
        log.info("%s on %s: %s (%s)", args.model, name, choice["recommended"] or "nothing eligible", choice["constraint"])
