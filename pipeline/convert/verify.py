"""Numerical verification of a converted model against its source on real images.

Every conversion step (TFLite → ONNX, ONNX → SavedModel) is checked output by output: the
largest absolute difference over the verification images must stay within
``atol + rtol · max|reference|`` (``convert.atol`` / ``convert.rtol`` in params.yaml). The
relative term matters because one model mixes landmark coordinates in pixels (up to 256) with
scores in [0, 1] and segmentation logits.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.calibration.reader import iter_inputs
from pipeline.convert.runners import runner_for
from pipeline.errors import PosezooError
from pipeline.params import get
from pipeline.registry import InputSpec

log = logging.getLogger(__name__)


def verify_settings(params: Mapping[str, Any], model: str, path: Path) -> tuple[float, float, int, dict[int, Mapping[str, float]]]:
    """(atol, rtol, samples, per-output overrides) of ``model`` from params.yaml.

    ``convert.atol`` / ``convert.rtol`` / ``convert.verify_samples``, and ``models.<model>.verify``
    (output index → its own atol / rtol).
    """
    overrides = {int(k): v for k, v in (get(dict(params), f"models.{model}", path) or {}).get("verify", {}).items()}
    return (
        float(get(dict(params), "convert.atol", path)),
        float(get(dict(params), "convert.rtol", path)),
        int(get(dict(params), "convert.verify_samples", path)),
        overrides,
    )


def output_tolerance(index: int, reference_max_abs: float, atol: float, rtol: float, overrides: Mapping[int, Mapping[str, float]] | None) -> float:
    """``atol + rtol · max|reference|`` for output ``index``, with that output's own atol / rtol if overridden."""
    own = (overrides or {}).get(index, {})
    return float(own.get("atol", atol)) + float(own.get("rtol", rtol)) * reference_max_abs


def compare_models(
    reference: Path,
    candidate: Path,
    manifest: Path,
    spec: InputSpec,
    atol: float,
    rtol: float,
    max_samples: int,
    overrides: Mapping[int, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Compare every output of ``candidate`` with ``reference`` (a source model); raise if a tolerance is exceeded.

    ``overrides`` maps an output index to its own ``atol`` / ``rtol`` (``models.<name>.verify``
    in params.yaml), for outputs whose conversion legitimately differs more than the keypoints,
    e.g. BlazePose's large segmentation logits.
    """
    ref_run = runner_for(reference, source_order=True)
    cand_run = runner_for(candidate)
    worst: list[dict[str, Any]] = []
    samples = 0
    for sample_id, x in itertools.islice(iter_inputs(manifest, spec, "NHWC"), max_samples):
        ref_out = ref_run(x)
        cand_out = cand_run(x)
        if len(ref_out) != len(cand_out):
            raise PosezooError(f"{candidate}: has {len(cand_out)} outputs, {reference} has {len(ref_out)}; the conversion dropped outputs")
        samples += 1
        if not worst:
            worst = [{"index": i, "shape": list(r.shape), "max_abs_diff": 0.0, "reference_max_abs": 0.0, "sample": None} for i, r in enumerate(ref_out)]
        for i, (r, c) in enumerate(zip(ref_out, cand_out)):
            if r.size != c.size:
                raise PosezooError(f"{candidate}: output {i} has {c.size} values, {reference} has {r.size}; outputs are mismatched")
            diff = float(np.max(np.abs(r.ravel() - c.ravel())))
            entry = worst[i]
            entry["reference_max_abs"] = max(entry["reference_max_abs"], float(np.max(np.abs(r))))
            if diff >= entry["max_abs_diff"]:
                entry["max_abs_diff"], entry["sample"] = diff, sample_id
    for entry in worst:
        entry["tolerance"] = output_tolerance(entry["index"], entry["reference_max_abs"], atol, rtol, overrides)
        entry["ok"] = entry["max_abs_diff"] <= entry["tolerance"]
        log.info("%s output %d: max |diff| %.3g (tolerance %.3g)", Path(candidate).name, entry["index"], entry["max_abs_diff"], entry["tolerance"])
    bad = [e for e in worst if not e["ok"]]
    if bad:
        e = bad[0]
        raise PosezooError(
            f"{candidate}: output {e['index']} differs from {reference} by {e['max_abs_diff']:.4g} on {e['sample']} "
            f"(tolerance {e['tolerance']:.4g} = atol + rtol * max|reference| {e['reference_max_abs']:.4g}); "
            "the conversion is not faithful — inspect the model, or set models.<name>.verify in params.yaml if the difference is expected"
        )
    return {"reference": str(reference), "candidate": str(candidate), "samples": samples, "outputs": worst}

