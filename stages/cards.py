"""Write a model card per model (zoo/<model>/README.md + accuracy-vs-footprint PNG), the zoo index
(zoo/README.md) and the per-variant CSV that `dvc plots show` draws, from the metrics of this run.

Covers exactly the variants of the current params (models × quantize.schemes × quantize.formats);
a missing stage output is an error, a figure the run does not produce (host latency without
metrics/benchmark, a dataset a model has no keypoint map for) reads "not measured".
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.atomic import atomic_path, write_text
from pipeline.report.card import PLOT_NAME, render_card
from pipeline.report.collect import collect
from pipeline.report.index import render_index
from pipeline.report.plots import render_csv, render_png

HELP = "model cards, zoo index and accuracy-vs-footprint plots from this run's metrics"
log = logging.getLogger("posezoo.cards")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file naming the models, schemes and formats")
    parser.add_argument("--metrics", type=Path, default=Path("metrics"), help="metrics folder (convert/, optimize/, evaluate/, footprint/, recommend/, benchmark/)")
    parser.add_argument("--int8-dir", type=Path, default=Path("build/int8"), help="quantize stage outputs (<model>-<scheme>-<format>/)")
    parser.add_argument("--out", type=Path, default=Path("zoo"), help="zoo folder to write (replaced as a whole)")
    parser.add_argument("--plots", type=Path, default=Path("plots/zoo/variants.csv"), help="per-variant CSV for `dvc plots`")


def run(args: argparse.Namespace) -> None:
    records = collect(args.params, args.metrics, args.int8_dir)
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        for record in records:
            card_dir = tmp / record.name
            card_dir.mkdir()
            # Links are computed against the final location, not the temporary one.
            (card_dir / "README.md").write_text(render_card(record, args.int8_dir, args.out / record.name), encoding="utf-8")
            (card_dir / PLOT_NAME).write_bytes(render_png(record))
        (tmp / "README.md").write_text(render_index(records), encoding="utf-8")
    write_text(args.plots, render_csv(records))
    log.info("wrote %d model cards and the index to %s, %d variants to %s", len(records), args.out, sum(len(r.variants) for r in records), args.plots)
