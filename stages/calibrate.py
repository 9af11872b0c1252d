"""Sample calibration and held-out crops from a declared image source (seeded) and write their manifests."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.calibration.sampler import SamplingParams, write_manifests
from pipeline.calibration.sources import load_declarations, resolve
from pipeline.errors import PosezooError
from pipeline.params import get, load_params

HELP = "sample calibration / held-out images and write manifests"
log = logging.getLogger("posezoo.calibrate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--declarations", type=Path, default=Path("calibration/sources.yaml"), help="calibration source declarations")
    parser.add_argument("--source", help="source name in the declarations (default: params calibration.source)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file")
    parser.add_argument("--out", required=True, type=Path, help="output directory (manifest.json, holdout.json, images/)")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    name = args.source or get(params, "calibration.source", args.params)
    declarations = load_declarations(args.declarations)
    if name not in declarations:
        raise PosezooError(f"{args.declarations}: no calibration source '{name}'; declared: {', '.join(declarations)}")
    decl = declarations[name]
    sampling = SamplingParams(
        num_calibration=int(get(params, "calibration.num_images", args.params)),
        num_holdout=int(get(params, "calibration.num_holdout", args.params)),
        seed=int(get(params, "calibration.seed", args.params)),
        crop_scale_range=tuple(get(params, "calibration.crop_scale", args.params)),  # type: ignore[arg-type]
        box_scale=float(decl.get("crop_scale", 1.25)),
        holdout_fraction=float(get(params, "calibration.holdout_fraction", args.params)),
        allow_fewer=bool(get(params, "calibration.allow_fewer", args.params)),
    )
    photos = resolve(decl, args.declarations.parent)
    written = write_manifests(photos, sampling, name, bool(decl.get("random_crops", False)), args.out)
    log.info("wrote %s from %d photos of source '%s'", ", ".join(str(p) for p in written.values()), len(photos), name)
