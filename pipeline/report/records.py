"""The typed records a model card is rendered from: one :class:`ModelRecord` per model.

:mod:`pipeline.report.collect` fills them from the run's files; the renderers (card, index, plots)
read only these, so what a card can show is exactly what these types hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline.registry import InputSpec
from pipeline.report.model_io import ModelIO

#: Ground-truth figures in the order a card prefers one as "the" accuracy figure of a model.
PRIMARY_GT = ("mean_oks", "coco_AP", "pck_0.2", "nme_interocular")


@dataclass(frozen=True)
class FileDigest:
    """One file of a variant as published: its name, size and sha256."""

    name: str
    path: Path
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class TargetFit:
    target: str
    fits: bool
    ram_headroom_bytes: int | None
    flash_headroom_bytes: int | None


@dataclass(frozen=True)
class Footprint:
    """Offline footprint of one model file (``posezoo footprint``)."""

    macc: int | None  # None: not estimated (OpenVINO IR: the target estimator reads TFLite / ONNX)
    weights_bytes: int
    flash_bytes: int | None
    activations_plan_bytes: int | None
    targets: tuple[TargetFit, ...]


@dataclass(frozen=True)
class RuntimeLatency:
    """Host latency of one runtime on one file; ``error`` set when the runtime could not run it."""

    runtime: str
    file: str
    median_ms: float | None
    p90_ms: float | None
    min_ms: float | None
    runs: int | None
    versions: str | None
    error: str | None


@dataclass(frozen=True)
class Benchmark:
    """``metrics/benchmark/<key>.json`` (host CPU latency, not on-target)."""

    key: str
    host: Mapping[str, Any]
    runtimes: tuple[RuntimeLatency, ...]
    fastest: str | None

    @property
    def fastest_median_ms(self) -> float | None:
        for r in self.runtimes:
            if r.runtime == self.fastest and r.median_ms is not None:
                return r.median_ms
        return None


@dataclass(frozen=True)
class Drift:
    """int8 vs float keypoint error on the held-out crops (``posezoo evaluate``)."""

    mean_px: float
    p95_px: float
    max_px: float
    mean_norm: float
    p95_norm: float
    max_norm: float
    within_2pct: float
    samples: int
    input_size_px: float
    holdout: str = ""  # what the held-out samples are (the manifest's note: subjects, photos)


@dataclass(frozen=True)
class GroundTruth:
    """Float and int8 figures on one ground-truth dataset, and int8 − float."""

    dataset: str
    schema: str
    task: str
    float: Mapping[str, Any]
    int8: Mapping[str, Any]
    delta: Mapping[str, Any]
    protocol: str = "box"  # how instances were framed: roi (deployment ROI from the ground truth) or box

    def framing(self) -> str:
        """How the instances were really framed, e.g. ``roi 8`` or ``roi 1, roi-upright 3``."""
        counts = self.float.get("framing") or {}
        return ", ".join(f"{k} {v}" for k, v in counts.items()) or self.protocol

    def primary(self) -> str | None:
        """The figure a summary shows for this dataset (OKS, AP, PCK or NME, the first present)."""
        return next((k for k in PRIMARY_GT if isinstance(self.int8.get(k), (int, float))), None)


@dataclass(frozen=True)
class Variant:
    """One int8 variant: ``<model>-<scheme>-<format>`` of the current params."""

    key: str
    scheme: str
    format: str
    file: str  # the model file (an OpenVINO IR is named by its .xml)
    files: tuple[FileDigest, ...]
    quantization: Mapping[str, Any]
    bias_corrected_layers: int | None
    search: Mapping[str, Any] | None  # the optimize stage's recipe search of this scheme, when it ran
    drift: Drift  # on the model's subject held-out ROIs (the headline figure)
    off_subject: Drift | None  # on random crops of the held-out photos, when measured
    accuracy: tuple[GroundTruth, ...]
    footprint: Footprint
    benchmark: Benchmark | None
    io: ModelIO | None

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


@dataclass(frozen=True)
class Recommendation:
    target: str
    constraint: str
    recommended: str | None
    recommended_mean_px: float | None
    eligible: tuple[str, ...]


@dataclass(frozen=True)
class Export:
    """One verified float export (ONNX, SavedModel) against the source model."""

    name: str
    max_abs_diff: float
    keypoints_max_abs_diff: float | None
    ok: bool


@dataclass(frozen=True)
class OutputInfo:
    index: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelRecord:
    """Everything a card shows about one model, each figure from the file named in its docstring."""

    name: str
    task: str
    description: str
    framework: str
    paper: str | None
    provenance: str | None
    license: str | None
    source: Mapping[str, Any]
    resolution: int
    input: InputSpec
    decoder: Mapping[str, Any]
    keypoint_count: int
    keypoint_output: int
    accuracy_maps: tuple[str, ...]
    reference_card: str | None
    reference_figures: tuple[Mapping[str, Any], ...]
    datasets: tuple[str, ...]
    conversion_samples: int | None
    conversion_atol: float | None
    conversion_rtol: float | None
    exports: tuple[Export, ...]
    outputs: tuple[OutputInfo, ...]
    float_footprint: Footprint
    float_benchmark: Benchmark | None
    variants: tuple[Variant, ...]
    recommendations: tuple[Recommendation, ...]
    target_descriptions: Mapping[str, str]
    params_digest: str
    inputs_digest: str
