"""Measure an int8 variant's keypoint drift against the float source model on held-out images."""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

from pipeline.atomic import write_json, write_text
from pipeline.evaluate.drift import measure_drift
from pipeline.params import load_params, model_for
from pipeline.source_model import model_file, single_model

HELP = "measure int8-vs-float keypoint drift on held-out images"
log = logging.getLogger("posezoo.evaluate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--source-dir", required=True, type=Path, help="output directory of `posezoo fetch` (the float reference)")
    parser.add_argument("--int8", required=True, type=Path, help="int8 model file, or a directory holding exactly one")
    parser.add_argument("--holdout", required=True, type=Path, help="held-out manifest (never the calibration one)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (models.<name>)")
    parser.add_argument("--metrics", required=True, type=Path, help="JSON metrics output")
    parser.add_argument("--plot", required=True, type=Path, help="per-keypoint drift CSV (DVC plot)")


def run(args: argparse.Namespace) -> None:
    spec, resolution = model_for(load_params(args.params), args.model, args.params)
    int8 = single_model(args.int8)
    metrics, rows = measure_drift(spec, model_file(args.source_dir, spec.source["format"]), int8, args.holdout)
    write_json(args.metrics, {"variant": int8.name, "model": spec.name, "resolution": resolution, "reference": "source float model", **metrics})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(args.plot, buffer.getvalue())
    log.info("%s: drift mean %.3f px, p95 %.3f px, max %.3f px over %d held-out samples", int8.name, metrics["mean_px"], metrics["p95_px"], metrics["max_px"], metrics["samples"])
