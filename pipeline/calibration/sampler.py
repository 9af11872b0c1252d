"""Seeded sampling of calibration and held-out crops, written as manifests.

Photos are first split (a fixed per-photo split from the declaration, else a seeded draw of
``holdout_fraction``) so that no held-out photo ever calibrates a model. Samples are then drawn
round-robin over the shuffled photos of a split: a random square crop of the photo (side a
fraction ``random_crop_side`` of its short side), or, for a COCO source, a square crop around an
annotated box enlarged by ``box_scale``. The manifest says
how many distinct photos back the samples, because 100 crops of 13 photos are not 100 photos.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pipeline.atomic import atomic_path, write_json
from pipeline.calibration.images import load_rgb
from pipeline.calibration.sources import Photo
from pipeline.errors import PosezooError

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SamplingParams:
    """Everything in ``params.yaml`` that decides which crops are drawn."""

    num_calibration: int
    num_holdout: int
    seed: int
    #: params ``calibration.random_crop_side``: (min, max) side of a random square crop, as a
    #: fraction of the photo's short side.
    random_crop_side: tuple[float, float]
    #: sources.yaml ``box_scale`` of a COCO source: an annotated box's enlargement.
    box_scale: float
    holdout_fraction: float
    allow_fewer: bool


def split_photos(photos: Sequence[Photo], params: SamplingParams) -> dict[str, list[Photo]]:
    """Partition photos into calibration and holdout, disjoint by photo (and by sha256)."""
    fixed = all(p.split for p in photos)
    if fixed:
        split = {name: [p for p in photos if p.split == name] for name in ("calibration", "holdout")}
    else:
        order = np.random.default_rng(params.seed).permutation(len(photos))
        n_hold = max(1, int(round(len(photos) * params.holdout_fraction))) if len(photos) > 1 else 0
        split = {"holdout": [photos[i] for i in sorted(order[:n_hold])], "calibration": [photos[i] for i in sorted(order[n_hold:])]}
    calib_hashes = {p.sha256 for p in split["calibration"]}
    split["holdout"] = [p for p in split["holdout"] if p.sha256 not in calib_hashes]
    return split


def _crop(rng: np.random.Generator, photo: Photo, size: tuple[int, int], params: SamplingParams) -> list[float]:
    width, height = size
    if photo.boxes:
        x, y, w, h = photo.boxes[int(rng.integers(len(photo.boxes)))]
        side = max(w, h) * params.box_scale
        cx, cy = x + w / 2, y + h / 2
        return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]
    lo, hi = params.random_crop_side
    side = rng.uniform(lo, hi) * min(width, height)
    x0 = rng.uniform(0, width - side)
    y0 = rng.uniform(0, height - side)
    return [x0, y0, x0 + side, y0 + side]


def draw(photos: Sequence[Photo], count: int, split: str, params: SamplingParams, random_crops: bool) -> list[dict[str, Any]]:
    """Draw ``count`` samples from ``photos`` (one split) with the seed; see the module docstring."""
    if not photos:
        raise PosezooError(f"calibration source has no {split} photos; add images or lower holdout_fraction")
    reuse = random_crops or any(p.boxes for p in photos)
    if len(photos) < count and not reuse:
        if not params.allow_fewer:
            raise PosezooError(
                f"calibration source has {len(photos)} {split} images but {count} were asked; "
                "add images, lower the count, or set calibration.allow_fewer: true"
            )
        count = len(photos)
    rng = np.random.default_rng([params.seed, 0 if split == "calibration" else 1])
    order = [photos[i] for i in rng.permutation(len(photos))]
    sizes = {p.sha256: load_rgb(p.path).size for p in order}
    samples = []
    for i in range(count):
        photo = order[i % len(order)]
        width, height = sizes[photo.sha256]
        crop = _crop(rng, photo, (width, height), params) if reuse else [0.0, 0.0, float(width), float(height)]
        samples.append(
            {
                "id": f"{split}-{i:04d}",
                "photo": photo.id,
                "origin": photo.origin,
                "sha256": photo.sha256,
                "file": f"images/{photo.sha256}{photo.path.suffix.lower()}",
                "crop": [round(v, 2) for v in crop],
            }
        )
    return samples


def manifest_document(source: str, split: str, seed: int, samples: list[dict[str, Any]], note: str) -> dict[str, Any]:
    """The manifest JSON every reader expects (version, provenance, samples with crops and sha256)."""
    return {
        "version": MANIFEST_VERSION,
        "source": source,
        "split": split,
        "seed": seed,
        "num_samples": len(samples),
        "distinct_photos": len({s["sha256"] for s in samples}),
        "note": note,
        "samples": samples,
    }


def write_manifests(photos: Sequence[Photo], params: SamplingParams, source_name: str, random_crops: bool, out_dir: Path) -> dict[str, Path]:
    """Write ``manifest.json`` (calibration), ``holdout.json`` and ``images/`` under ``out_dir``.

    Random crops are drawn from whole files: a contact sheet's tiles count as the one sheet.
    """
    photos = list({p.sha256: p.whole() for p in photos}.values())
    split = split_photos(photos, params)
    counts = {"calibration": params.num_calibration, "holdout": params.num_holdout}
    written: dict[str, Path] = {}
    with atomic_path(out_dir / "images") as images_tmp:
        images_tmp.mkdir()
        for photo in split["calibration"] + split["holdout"]:
            shutil.copyfile(photo.path, images_tmp / f"{photo.sha256}{photo.path.suffix.lower()}")
        manifests = {}
        for name, file_name in (("calibration", "manifest.json"), ("holdout", "holdout.json")):
            samples = draw(split[name], counts[name], name, params, random_crops)
            distinct = len({s["sha256"] for s in samples})
            note = f"{len(samples)} samples are crops of {distinct} distinct photos" if distinct < len(samples) else f"{len(samples)} samples, one per photo"
            manifests[out_dir / file_name] = manifest_document(source_name, name, params.seed, samples, note)
    for path, manifest in manifests.items():
        write_json(path, manifest)
        written[manifest["split"]] = path
    return written


def read_manifest(path: Path) -> dict[str, Any]:
    """Load a manifest and check it is one this version writes."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise PosezooError(f"{path}: cannot read calibration manifest ({err}); rerun `posezoo calibrate`") from err
    if manifest.get("version") != MANIFEST_VERSION or not manifest.get("samples"):
        raise PosezooError(f"{path}: not a posezoo manifest (version {MANIFEST_VERSION}) or empty; rerun `posezoo calibrate`")
    return manifest

