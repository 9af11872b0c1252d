"""Held-out manifests of subject crops: the top-down crops of annotated instances.

The default held-out set is random crops of photos, where hands are small or absent and bodies
cut: drift measured there says little about a hand or body model on its intended input. A
keypoint dataset's instance boxes give crops that contain the subject, exactly as the
ground-truth evaluation crops them (:mod:`pipeline.accuracy.topdown`); seeded jitter of the box
centre and size (±``jitter`` of the side) adds samples per instance. The result is an ordinary
manifest, so drift, calibration readers and benchmarks take it unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.accuracy.dataset import KeypointDataset
from pipeline.accuracy.topdown import square_crop
from pipeline.atomic import atomic_path, write_json
from pipeline.calibration.sampler import manifest_document
from pipeline.fetch import sha256_file


def write_instance_manifest(
    datasets: Sequence[KeypointDataset], crop_factor: float, out_dir: Path, per_instance: int = 1, jitter: float = 0.1, seed: int = 0
) -> Path:
    """Write ``out_dir/holdout.json`` + ``images/``: ``per_instance`` crops of every instance.

    The first crop of an instance is the evaluation crop itself; the others move the centre and
    scale the side by up to ±``jitter`` (uniform, seeded).
    """
    rng = np.random.default_rng(seed)
    samples = []
    files: dict[str, Path] = {}
    for dataset in datasets:
        for inst in dataset.instances:
            digest = sha256_file(inst.image)
            files[digest] = inst.image
            base = square_crop(inst.bbox, crop_factor)
            for k in range(per_instance):
                dx, dy, ds = (0.0, 0.0, 0.0) if k == 0 else rng.uniform(-jitter, jitter, size=3)
                side = base.side * (1.0 + ds)
                cx, cy = base.x0 + base.side / 2 + dx * base.side, base.y0 + base.side / 2 + dy * base.side
                samples.append(
                    {
                        "id": f"{dataset.name}-{inst.ann_id}-{k}",
                        "photo": f"{dataset.name}/{inst.image.name}",
                        "origin": f"{dataset.name} annotation {inst.ann_id}",
                        "sha256": digest,
                        "file": f"images/{digest}{inst.image.suffix.lower()}",
                        "crop": [round(v, 2) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)],
                    }
                )
    with atomic_path(out_dir / "images") as images_tmp:
        images_tmp.mkdir()
        for digest, path in files.items():
            shutil.copyfile(path, images_tmp / f"{digest}{path.suffix.lower()}")
    manifest = out_dir / "holdout.json"
    note = f"{len(samples)} crops of {sum(len(d.instances) for d in datasets)} annotated instances in {len(files)} images"
    write_json(manifest, manifest_document("+".join(d.name for d in datasets), "holdout", seed, samples, note))
    return manifest
