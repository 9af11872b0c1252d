"""Drift of an int8 variant against its float source model, on held-out images.

For every held-out sample both models see the same input; both outputs are decoded to keypoints
in input pixels and the per-keypoint Euclidean distance is the drift. Reported: per-keypoint
mean, overall mean / p95 / max in pixels, the same divided by the input size (the larger side),
and the fraction of keypoints within 2 % of the input size. The reference is always the source
float model, so TFLite and ONNX variants of one model are comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.calibration.reader import iter_inputs
from pipeline.calibration.sampler import read_manifest
from pipeline.convert.runners import runner_for
from pipeline.evaluate.decoders import decoder_for
from pipeline.registry import ModelSpec

WITHIN_FRACTION = 0.02


def measure_drift(spec: ModelSpec, float_model: Path, int8_model: Path, holdout: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, per-keypoint rows) of ``int8_model`` against ``float_model`` on ``holdout``."""
    decode = decoder_for(spec)
    ref_run = runner_for(float_model, source_order=True)
    q_run = runner_for(int8_model)
    errors = []
    total = len(read_manifest(holdout)["samples"])
    for _, x in tqdm(iter_inputs(holdout, spec.input, "NHWC"), total=total, desc=f"drift {Path(int8_model).name}", leave=False):
        ref = decode(ref_run(x), spec)
        got = decode(q_run(x), spec)
        errors.append(np.linalg.norm(ref - got, axis=1))
    err = np.stack(errors)  # (samples, keypoints)
    size = float(max(spec.input.height, spec.input.width))
    flat = err.ravel()
    metrics = {
        "samples": int(err.shape[0]),
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
    names = spec.keypoint_names if isinstance(spec.keypoint_names, list) else None
    rows = [
        {"keypoint": k, "name": names[k] if names else str(k), "mean_px": round(float(err[:, k].mean()), 4), "max_px": round(float(err[:, k].max()), 4)}
        for k in range(err.shape[1])
    ]
    return metrics, rows
