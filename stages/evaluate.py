"""Evaluate an int8 variant against its float reference: keypoint drift on held-out images and
ground-truth accuracy (float, int8 and the difference) on keypoint datasets."""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path
from typing import Any

from pipeline.accuracy.dataset import KeypointDataset, load_dataset
from pipeline.accuracy.groundtruth import applicable, compare
from pipeline.accuracy.topdown import PROTOCOLS
from pipeline.accuracy.sources import resolve_dataset
from pipeline.atomic import write_json, write_text
from pipeline.convert.runners import runner_for
from pipeline.errors import PosezooError
from pipeline.evaluate.drift import manifest_provenance, measure_drift
from pipeline.params import get, load_params, model_for
from pipeline.quantize.sidecar import read_sidecar
from pipeline.source_model import reference_model, single_model

HELP = "measure int8-vs-float drift on held-out images and ground-truth accuracy on keypoint datasets"
log = logging.getLogger("posezoo.evaluate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.accuracy.dataset import KEYPOINT_FIELDS

    parser.add_argument("--model", required=True, help="registry name")
    parser.add_argument("--source-dir", required=True, type=Path, help="output directory of `posezoo fetch` (the float reference for float sources)")
    parser.add_argument("--float-dir", type=Path, help="output directory of `posezoo convert` (the float reference when the source is int8)")
    parser.add_argument("--int8", required=True, type=Path, help="int8 model file, or a directory holding exactly one")
    parser.add_argument("--holdout", type=Path, help="held-out manifest for drift (never the calibration one)")
    parser.add_argument("--plot", type=Path, help="per-keypoint drift CSV (DVC plot); needs --holdout")
    parser.add_argument("--off-subject-holdout", type=Path, help="a second held-out manifest (random crops of the held-out photos): drift reported as off_subject")
    parser.add_argument("--crop", choices=PROTOCOLS, help="how ground-truth instances are framed (default: params accuracy.crop, else roi)")
    parser.add_argument(
        "--dataset",
        nargs="+",
        action="append",
        default=[],
        metavar=("ANNOTATIONS_JSON", "IMAGES_DIR"),
        help="COCO-style keypoint dataset for ground-truth accuracy (images default to the JSON's folder); repeatable",
    )
    parser.add_argument(
        "--keypoints-field",
        choices=KEYPOINT_FIELDS,
        default="keypoints",
        help="annotation field the --dataset keypoints are read from: COCO's keypoints, a COCO-WholeBody part, or hands (both hands, one instance each)",
    )
    parser.add_argument("--datasets-from", type=Path, help="dataset declarations (evaluation/datasets.yaml); the names come from params accuracy.datasets")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file (models.<name>, accuracy.datasets)")
    parser.add_argument("--metrics", required=True, type=Path, help="JSON metrics output")


def _datasets(args: argparse.Namespace, params: dict[str, Any]) -> list[KeypointDataset]:
    found = []
    for values in args.dataset:
        if len(values) > 2:
            raise PosezooError(f"--dataset takes a JSON and optionally an image folder, got {len(values)} values: {' '.join(values)}")
        found.append(load_dataset(Path(values[0]), Path(values[1]) if len(values) == 2 else None, keypoints_field=args.keypoints_field))
    if args.datasets_from:
        found += [resolve_dataset(name, args.datasets_from) for name in get(params, "accuracy.datasets", args.params)]
    return found


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    spec, resolution = model_for(params, args.model, args.params)
    if args.plot and not args.holdout:
        raise PosezooError("--plot is the per-keypoint drift on held-out images; pass --holdout too")
    datasets = _datasets(args, params)
    if not args.holdout and not datasets:
        raise PosezooError("nothing to evaluate: pass --holdout (drift) and/or --dataset / --datasets-from (ground truth)")
    int8 = single_model(args.int8)
    reference = reference_model(spec, args.source_dir, args.float_dir)
    result: dict[str, Any] = {"variant": int8.name, "model": spec.name, "resolution": resolution, "reference": str(reference.name)}
    made = read_sidecar(int8)
    if made is not None:  # how `posezoo quantize` made it (scheme, granularity, activation bits, float layers)
        result["quantization"] = made
    if args.holdout:
        drift, rows = measure_drift(spec, reference, int8, args.holdout)
        result |= drift | {"holdout": manifest_provenance(args.holdout)}
        log.info("%s: drift mean %.3f px, p95 %.3f px, max %.3f px over %d held-out samples (%s)", int8.name, drift["mean_px"], drift["p95_px"], drift["max_px"], drift["samples"], result["holdout"]["note"])
    if args.off_subject_holdout:
        off, _ = measure_drift(spec, reference, int8, args.off_subject_holdout)
        result["off_subject"] = off | {"holdout": manifest_provenance(args.off_subject_holdout)}
        log.info("%s: off-subject drift mean %.3f px over %d random crops", int8.name, off["mean_px"], off["samples"])
        if args.plot:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            write_text(args.plot, buffer.getvalue())
    accuracy = {}
    protocol = args.crop or (params.get("accuracy") or {}).get("crop", "roi")
    ref_run, int8_run = runner_for(reference, source_order=True), runner_for(int8)
    for dataset in datasets:
        if not applicable(spec, dataset):
            log.info("%s: no keypoint map from %s to schema %s (%s); skipped", dataset.name, spec.name, dataset.schema.name, spec.path.name)
            continue
        accuracy[dataset.name] = compare(spec, ref_run, int8_run, dataset, ("float", "int8"), protocol)
        figures = ", ".join(f"{k} {v:+.4f}" for k, v in accuracy[dataset.name]["delta"].items())
        log.info("%s on %s (%d instances, %s framing %s): int8 - float: %s", int8.name, dataset.name, len(dataset.instances), protocol, accuracy[dataset.name]["float"]["framing"], figures)
    if datasets:
        result["accuracy"] = accuracy
    write_json(args.metrics, result)
