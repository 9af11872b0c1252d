"""Drift of an int8 variant against its float source model, on held-out images.

For every held-out sample both models see the same input; both outputs are decoded to keypoints
in input pixels and the per-keypoint Euclidean distance is the drift. Reported: per-keypoint
mean, overall mean / p95 / max in pixels, the same divided by the input size (the larger side),
and the fraction of keypoints within 2 % of the input size. The reference is always the source
float model, so TFLite and ONNX variants of one model are comparable.

Multi-person models detect a varying number of people, in no fixed order: their float and int8
detections are paired by box IoU (:func:`match_instances`) and drift is measured over the
matched pairs; how many instances each side found and how many were matched is reported too,
because quantization can also add or lose detections, which keypoint error alone cannot show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.calibration.reader import iter_inputs
from pipeline.calibration.sampler import read_manifest
from pipeline.convert.runners import runner_for
from pipeline.errors import PosezooError
from pipeline.evaluate.decoders import Poses, decoder_for, is_multi_instance, match_instances
from pipeline.registry import ModelSpec

WITHIN_FRACTION = 0.02
#: Box IoU at which a float and an int8 detection count as the same person.
MATCH_IOU = 0.5


def _pair_errors(ref: Poses, got: Poses, multi: bool) -> list[np.ndarray]:
    """Per-keypoint distances (K,) for each compared instance pair of one sample."""
    pairs = match_instances(ref, got, MATCH_IOU) if multi else [(0, 0)]
    return [np.linalg.norm(ref.keypoints[i] - got.keypoints[j], axis=1) for i, j in pairs]


def measure_drift(spec: ModelSpec, float_model: Path, int8_model: Path, holdout: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, per-keypoint rows) of ``int8_model`` against ``float_model`` on ``holdout``."""
    decode = decoder_for(spec)
    multi = is_multi_instance(spec)
    ref_run = runner_for(float_model, source_order=True)
    q_run = runner_for(int8_model)
    errors: list[np.ndarray] = []
    samples = instances_ref = instances_int8 = 0
    total = len(read_manifest(holdout)["samples"])
    for _, x in tqdm(iter_inputs(holdout, spec.input, "NHWC"), total=total, desc=f"drift {Path(int8_model).name}", leave=False):
        ref = decode(ref_run(x), spec)
        got = decode(q_run(x), spec)
        errors.extend(_pair_errors(ref, got, multi))
        samples += 1
        instances_ref += len(ref)
        instances_int8 += len(got)
    if not samples:
        raise PosezooError(f"{holdout}: the held-out manifest has no samples; drift cannot be measured")
    if not errors:
        raise PosezooError(
            f"{int8_model}: no float/int8 detection pair matched on any of {samples} held-out samples "
            f"(float found {instances_ref}, int8 {instances_int8}); drift cannot be measured — check the held-out images show people"
        )
    err = np.stack(errors)  # (compared instances, keypoints): one row per sample for single-instance models
    size = float(max(spec.input.height, spec.input.width))
    flat = err.ravel()
    metrics = {
        "samples": samples,
        "keypoints": int(err.shape[1]),
        "mean_px": float(flat.mean()),
        "p95_px": float(np.percentile(flat, 95)),
        "max_px": float(flat.max()),
        "mean_norm": float(flat.mean() / size),
        "p95_norm": float(np.percentile(flat, 95) / size),
        "max_norm": float(flat.max() / size),
        "within_2pct": float(np.mean(flat <= WITHIN_FRACTION * size)),
        "input_size_px": size,
    }
    if multi:
        metrics.update(instances_ref=instances_ref, instances_int8=instances_int8, instances_matched=int(err.shape[0]))
    names = spec.keypoint_names if isinstance(spec.keypoint_names, list) else None
    rows = [
        {"keypoint": k, "name": names[k] if names else str(k), "mean_px": round(float(err[:, k].mean()), 4), "max_px": round(float(err[:, k].max()), 4)}
        for k in range(err.shape[1])
    ]
    return metrics, rows


def manifest_provenance(path: Path) -> dict[str, Any]:
    """What drift figures measured on a manifest stand on: its split note and its subject / photo counts."""
    manifest = read_manifest(path)
    keys = ("note", "distinct_subjects", "distinct_photos", "roi_kind", "detector")
    return {"manifest": Path(path).name, **{k: manifest[k] for k in keys if k in manifest}}
