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
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

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


Outputs = Callable[[np.ndarray], Sequence[np.ndarray]]
"""A model run on one input: its outputs, in the order the two compared models share."""


class Criterion(ABC):
    """How :func:`compare_outputs` judges each output: what a sample adds, what the output ends as, when it fails.

    ``reference`` and ``candidate`` name the two models in the messages. The base class checks
    that the two give the same number of outputs of the same sizes; its subclasses decide the
    figure judged: :class:`MaxAbsDiff` here, the dequantized models' mean in output steps in
    :mod:`pipeline.convert.dequantize`.
    """

    def __init__(self, reference: Path | str, candidate: Path | str) -> None:
        self.reference = reference
        self.candidate = candidate

    def mismatch(self, ref_out: Sequence[np.ndarray], cand_out: Sequence[np.ndarray]) -> str | None:
        """Why one sample's outputs cannot be compared at all, or None."""
        if len(ref_out) != len(cand_out):
            return f"{self.candidate}: has {len(cand_out)} outputs, {self.reference} has {len(ref_out)}; the conversion dropped outputs"
        for i, (r, c) in enumerate(zip(ref_out, cand_out)):
            if r.size != c.size:
                return f"{self.candidate}: output {i} has {c.size} values, {self.reference} has {r.size}; outputs are mismatched"
        return None

    @abstractmethod
    def start(self, index: int, reference: np.ndarray) -> Any:
        """The running state of output ``index``, from its first reference value."""

    @abstractmethod
    def add(self, state: Any, sample: Any, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Fold one sample's values of the output into ``state``."""

    @abstractmethod
    def finish(self, state: Any) -> dict[str, Any]:
        """The output's report entry (what the metrics record), once every sample is in; ``ok`` says if it passes."""

    @abstractmethod
    def failure(self, entry: dict[str, Any]) -> str:
        """The error for an entry that fails the criterion."""


def compare_outputs(samples: Iterable[tuple[Any, np.ndarray]], reference: Outputs, candidate: Outputs, criterion: Criterion) -> tuple[int, list[dict[str, Any]]]:
    """Run both models on every (sample id, input) of ``samples``; judge each output by ``criterion``.

    Returns the sample count and one entry per output; raises :class:`PosezooError` on the first
    sample whose outputs do not match up, else (once every entry is made) on the first failing
    output. The one comparison of the conversion checks, the dequantized models and the
    equalized ones: only the criterion differs.
    """
    states: list[Any] = []
    count = 0
    for sample, x in samples:
        ref_out, cand_out = reference(x), candidate(x)
        problem = criterion.mismatch(ref_out, cand_out)
        if problem is not None:
            raise PosezooError(problem)
        count += 1
        if not states:
            states = [criterion.start(i, r) for i, r in enumerate(ref_out)]
        for state, r, c in zip(states, ref_out, cand_out):
            criterion.add(state, sample, r, c)
    entries = [criterion.finish(state) for state in states]
    failed = next((entry for entry in entries if not entry["ok"]), None)
    if failed is not None:
        raise PosezooError(criterion.failure(failed))
    return count, entries


class MaxAbsDiff(Criterion):
    """Each output's max |diff| over the samples within ``atol + rtol · max|reference|`` (:func:`output_tolerance`).

    The entry records the output's shape, the max |diff|, the sample it was (last) reached on, the
    max |reference| and the tolerance.
    """

    def __init__(self, reference: Path | str, candidate: Path | str, atol: float, rtol: float, overrides: Mapping[int, Mapping[str, float]] | None) -> None:
        super().__init__(reference, candidate)
        self.atol, self.rtol, self.overrides = atol, rtol, overrides

    def start(self, index: int, reference: np.ndarray) -> dict[str, Any]:
        return {"index": index, "shape": list(reference.shape), "max_abs_diff": 0.0, "reference_max_abs": 0.0, "sample": None}

    def add(self, state: dict[str, Any], sample: Any, reference: np.ndarray, candidate: np.ndarray) -> None:
        diff = float(np.max(np.abs(reference.ravel() - candidate.ravel())))
        state["reference_max_abs"] = max(state["reference_max_abs"], float(np.max(np.abs(reference))))
        if diff >= state["max_abs_diff"]:
            state["max_abs_diff"], state["sample"] = diff, sample

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        state["tolerance"] = output_tolerance(state["index"], state["reference_max_abs"], self.atol, self.rtol, self.overrides)
        state["ok"] = state["max_abs_diff"] <= state["tolerance"]
        log.info("%s output %d: max |diff| %.3g (tolerance %.3g)", Path(self.candidate).name, state["index"], state["max_abs_diff"], state["tolerance"])
        return state

    def failure(self, entry: dict[str, Any]) -> str:
        return (
            f"{self.candidate}: output {entry['index']} differs from {self.reference} by {entry['max_abs_diff']:.4g} on {entry['sample']} "
            f"(tolerance {entry['tolerance']:.4g} = atol + rtol * max|reference| {entry['reference_max_abs']:.4g}); "
            "the conversion is not faithful — inspect the model, or set models.<name>.verify in params.yaml if the difference is expected"
        )


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
    samples = itertools.islice(iter_inputs(manifest, spec, "NHWC"), max_samples)
    count, outputs = compare_outputs(samples, ref_run, cand_run, MaxAbsDiff(reference, candidate, atol, rtol, overrides))
    return {"reference": str(reference), "candidate": str(candidate), "samples": count, "outputs": outputs}
