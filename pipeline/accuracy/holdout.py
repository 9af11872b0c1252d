"""Held-out manifests of subject crops: the instances of keypoint datasets, framed as deployed.

The default held-out set is random crops of photos, where hands are small or absent and bodies
cut: drift measured there says little about a hand or body model on its intended input. A
keypoint dataset's instances give samples that show the subject exactly as the ground-truth
evaluation frames them (:func:`pipeline.accuracy.topdown.frame_instance`): the ROI tracking would
derive from the keypoints when the model has an ROI convention, else the square box crop. Seeded
jitter of centre and size (±``jitter`` of the side; ROIs also turn by up to ±``jitter`` × 100°)
adds samples per instance. The result is an ordinary manifest, so drift, calibration readers and
benchmarks take it unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.accuracy.dataset import KeypointDataset
from pipeline.accuracy.groundtruth import accuracy_spec
from pipeline.accuracy.topdown import square_crop, truth_roi
from pipeline.atomic import atomic_path, write_json
from pipeline.calibration.sampler import manifest_document
from pipeline.calibration.subjects import jitter as jitter_roi
from pipeline.fetch import sha256_file
from pipeline.registry import ModelSpec
from pipeline.roi.conventions import Augment, roi_spec


def write_instance_manifest(
    datasets: Sequence[KeypointDataset], spec: ModelSpec, out_dir: Path, per_instance: int = 1, jitter: float = 0.1, seed: int = 0
) -> Path:
    """Write ``out_dir/holdout.json`` + ``images/``: ``per_instance`` samples of every instance.

    The first sample of an instance is its evaluation framing itself; the others are jittered
    (uniform, seeded).
    """
    rng = np.random.default_rng(seed)
    acc = accuracy_spec(spec)
    convention = roi_spec(spec)
    rule = convention.truth_rule if convention is not None else None
    augment = Augment(rotation_degrees=100.0 * jitter, scale=jitter, shift=jitter)
    samples: list[dict[str, Any]] = []
    files: dict[str, Path] = {}
    for dataset in datasets:
        table = acc.maps.get(dataset.schema.name)
        for inst in dataset.instances:
            digest = sha256_file(inst.image)
            files[digest] = inst.image
            found = truth_roi(inst.keypoints, table, spec.keypoint_count, rule) if rule is not None and table is not None else None
            base = square_crop(inst.bbox, acc.box_scale)
            for k in range(per_instance):
                sample = {
                    "id": f"{dataset.name}-{inst.ann_id}-{k}",
                    "photo": f"{dataset.name}/{inst.image.name}",
                    "subject": f"{dataset.name}/{inst.ann_id}",
                    "origin": f"{dataset.name} annotation {inst.ann_id}",
                    "sha256": digest,
                    "file": f"images/{digest}{inst.image.suffix.lower()}",
                }
                if found is not None:
                    sample["roi"] = (found[0] if k == 0 else jitter_roi(rng, found[0], augment)[0]).as_list()
                else:
                    dx, dy, ds = (0.0, 0.0, 0.0) if k == 0 else rng.uniform(-jitter, jitter, size=3)
                    side = base.side * (1.0 + ds)
                    cx, cy = base.x0 + base.side / 2 + dx * base.side, base.y0 + base.side / 2 + dy * base.side
                    sample["crop"] = [round(v, 2) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)]
                samples.append(sample)
    with atomic_path(out_dir / "images") as images_tmp:
        images_tmp.mkdir()
        for digest, path in files.items():
            shutil.copyfile(path, images_tmp / f"{digest}{path.suffix.lower()}")
    manifest = out_dir / "holdout.json"
    instances = sum(len(d.instances) for d in datasets)
    note = f"{len(samples)} samples of {instances} annotated instances in {len(files)} images ({'ROIs from the ground truth' if rule else 'box crops'})"
    doc = manifest_document("+".join(d.name for d in datasets), "holdout", seed, samples, note)
    doc |= {"border": convention.border if convention is not None else "zero", "distinct_subjects": instances}
    write_json(manifest, doc)
    return manifest
