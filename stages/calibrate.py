"""Sample calibration and held-out images from a declared image source (seeded) and write their manifests.

Without ``--model``: the off-subject manifests (seeded random square crops of the photos,
``manifest.json`` + ``holdout.json``), which verify conversions and measure off-subject drift.
With ``--model``: that model's subject-centred sets (``calibration.json``, ``validation.json``,
``holdout.json``): its pipeline's detector finds the subjects and its ROI convention crops them
(:mod:`pipeline.calibration.subjects`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeline.calibration.sampler import SamplingParams, write_manifests
from pipeline.calibration.sources import load_declarations, resolve
from pipeline.calibration.subjects import tracker, write_subject_manifests
from pipeline.convert.runners import runner_for
from pipeline.errors import PosezooError
from pipeline.params import get, load_params, model_for
from pipeline.registry import refuse_renamed
from pipeline.roi.conventions import Augment, RoiSpec, roi_spec
from pipeline.roi.detectors import load_detector
from pipeline.source_model import model_file

HELP = "sample calibration / held-out images (off-subject, or a model's subject ROIs with --model) and write manifests"
log = logging.getLogger("posezoo.calibrate")
#: Jitter for a model without an ROI convention, which is calibrated on whole photos.
WHOLE_PHOTO_AUGMENT = Augment(scale=0.1, shift=0.05, brightness=0.1, contrast=0.15)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--declarations", type=Path, default=Path("calibration/sources.yaml"), help="calibration source declarations")
    parser.add_argument("--source", help="source name in the declarations (default: params calibration.source)")
    parser.add_argument("--model", help="registry name: write this model's subject-centred calibration / validation / held-out manifests")
    parser.add_argument("--source-dir", type=Path, help="with --model: output directory of `posezoo fetch` (the float landmark model runs one tracking step per subject)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file")
    parser.add_argument("--out", required=True, type=Path, help="output directory (manifests and images/)")


def _subjects(args: argparse.Namespace, params: dict[str, Any], sampling: SamplingParams, name: str, photos: list) -> None:
    spec, _ = model_for(params, args.model, args.params)
    convention = roi_spec(spec) or RoiSpec(kind="whole_image", origin=spec.path, augment=WHOLE_PHOTO_AUGMENT)
    detect = track = None
    if convention.kind == "rect":
        detect = load_detector(convention.detector)  # type: ignore[arg-type]
        if args.source_dir is None:
            raise PosezooError(f"{spec.name} is cropped by a detector and tracked by its own landmarks: pass --source-dir (the `posezoo fetch` output)")
        model = model_file(args.source_dir, spec.source["format"])
        track = tracker(spec, runner_for(model, source_order=True), convention)
    counts = {"calibration": sampling.num_calibration, "validation": int(get(params, "calibration.num_validation", args.params)), "holdout": sampling.num_holdout}
    fraction = float(get(params, "calibration.validation_fraction", args.params))
    manifests = write_subject_manifests(spec.name, photos, convention, detect, track, sampling, counts, fraction, name, args.out)
    for split, doc in manifests.items():
        log.info("%s %s: %s", spec.name, split, doc["note"])
    first = next(iter(manifests.values()))
    if first["photos_without_subject"]:
        log.info("%s: %d of %d photos show no subject and were skipped: %s", spec.name, len(first["photos_without_subject"]), len(photos), ", ".join(first["photos_without_subject"]))
    if first["rejected_by_presence"]:
        log.info("%s: detections the landmark model scored as no subject (dropped, as MediaPipe drops them): %s", spec.name, "; ".join(first["rejected_by_presence"]))


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    refuse_renamed(params.get("calibration"), {"crop_scale": "random_crop_side"}, f"{args.params}: calibration")
    name = args.source or get(params, "calibration.source", args.params)
    declarations = load_declarations(args.declarations)
    if name not in declarations:
        raise PosezooError(f"{args.declarations}: no calibration source '{name}'; declared: {', '.join(declarations)}")
    decl = declarations[name]
    sampling = SamplingParams(
        num_calibration=int(get(params, "calibration.num_images", args.params)),
        num_holdout=int(get(params, "calibration.num_holdout", args.params)),
        seed=int(get(params, "calibration.seed", args.params)),
        random_crop_side=tuple(get(params, "calibration.random_crop_side", args.params)),  # type: ignore[arg-type]
        box_scale=float(decl.get("box_scale", 1.25)),
        holdout_fraction=float(get(params, "calibration.holdout_fraction", args.params)),
        allow_fewer=bool(get(params, "calibration.allow_fewer", args.params)),
    )
    photos = resolve(decl, args.declarations.parent)
    if args.model:
        _subjects(args, params, sampling, name, photos)
        return
    written = write_manifests(photos, sampling, name, bool(decl.get("random_crops", False)), args.out)
    log.info("wrote %s from %d photos of source '%s'", ", ".join(str(p) for p in written.values()), len(photos), name)
