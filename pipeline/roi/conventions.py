"""The ROI convention of a model: its registry ``roi:`` block, or its family's.

Models of one family share their pipeline's ROI rules (hand full and lite are cropped by the same
palm detector and the same tracking rule), so the block usually lives once in
``pipeline/registry/families/<family>.yaml``; a model's own ``roi:`` block wins. Kinds:

- ``rect``: MediaPipe-style rules (:class:`pipeline.roi.geometry.RoiRule`) — ``from_detection``
  (with the ``detector`` that finds subjects in a photo), ``from_landmarks`` (tracking: the
  previous frame's landmarks) and optionally ``ground_truth`` (the same rule restated for the
  keypoints a dataset has, when tracking uses points no dataset labels, e.g. BlazePose's
  auxiliary alignment points); ``presence`` names the landmark model's presence output (a
  subject it scores below the threshold is dropped, as MediaPipe stops tracking it);
  ``augment`` gives the calibration jitter.
- ``whole_image``: the model sees the whole photo, letterboxed (multi-person YOLO-pose, and
  MoveNet's first frame).

A model with no convention (a user's model, the tests' tiny ones) is cropped the upright-box way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.errors import PosezooError
from pipeline.registry import ModelSpec
from pipeline.roi.geometry import RoiRule
from pipeline.roi.warp import BORDERS

FAMILIES_DIR = Path(__file__).resolve().parents[1] / "registry" / "families"
KINDS = ("rect", "whole_image")


@dataclass(frozen=True)
class Augment:
    """Seeded calibration jitter around a subject's ROI: uniform in ± these ranges."""

    rotation_degrees: float = 0.0
    scale: float = 0.0  # relative change of the side
    shift: float = 0.0  # centre move, as a fraction of the side
    brightness: float = 0.0  # added to pixels, as a fraction of 255
    contrast: float = 0.0  # relative gain

    @classmethod
    def parse(cls, block: Mapping[str, Any] | None) -> "Augment":
        return cls(**{k: float(v) for k, v in (block or {}).items()})


@dataclass(frozen=True)
class Presence:
    """The landmark model's own subject-presence output: MediaPipe drops a subject (stops tracking) below ``threshold``."""

    output: int
    activation: str  # "none" (the model outputs a probability) or "sigmoid" (a logit)
    threshold: float

    def score(self, outputs: Any) -> float:
        value = float(outputs[self.output].ravel()[0])
        return 1.0 / (1.0 + math.exp(-value)) if self.activation == "sigmoid" else value


@dataclass(frozen=True)
class RoiSpec:
    """A model's ROI convention (see the module docstring)."""

    kind: str
    origin: Path
    border: str = "zero"
    detector: str | None = None
    min_score: float = 0.5
    from_detection: RoiRule | None = None
    from_landmarks: RoiRule | None = None
    ground_truth: RoiRule | None = None
    presence: Presence | None = None
    augment: Augment = field(default_factory=Augment)

    @property
    def truth_rule(self) -> RoiRule | None:
        """The rule that derives an ROI from ground-truth keypoints (as tracking does from landmarks)."""
        return self.ground_truth or self.from_landmarks


def _parse(block: Mapping[str, Any], origin: Path) -> RoiSpec:
    where = f"{origin}: roi"
    kind = block.get("kind")
    if kind not in KINDS:
        raise PosezooError(f"{where}.kind is {kind!r}; use one of {', '.join(KINDS)}")
    border = block.get("border", "zero")
    if border not in BORDERS:
        raise PosezooError(f"{where}.border is {border!r}; use one of {', '.join(BORDERS)}")
    rules = {name: RoiRule.parse(block[name], f"{where}.{name}") if block.get(name) else None for name in ("from_detection", "from_landmarks", "ground_truth")}
    detection = block.get("from_detection") or {}
    presence = block.get("presence")
    if presence is not None and presence.get("activation", "none") not in ("none", "sigmoid"):
        raise PosezooError(f"{where}.presence.activation is {presence.get('activation')!r}; use none or sigmoid")
    if kind == "rect" and not (rules["from_detection"] and detection.get("detector") and rules["from_landmarks"]):
        raise PosezooError(f"{where}: a rect convention needs from_detection (with its detector) and from_landmarks; add them")
    return RoiSpec(
        kind=kind,
        origin=origin,
        border=border,
        detector=detection.get("detector"),
        min_score=float(detection.get("min_score", 0.5)),
        augment=Augment.parse(block.get("augment")),
        presence=Presence(int(presence["output"]), presence.get("activation", "none"), float(presence.get("threshold", 0.5))) if presence else None,
        **rules,
    )


def roi_spec(spec: ModelSpec) -> RoiSpec | None:
    """The model's ROI convention, or None when neither it nor its family declares one."""
    if spec.raw.get("roi"):
        return _parse(spec.raw["roi"], spec.path)
    family = spec.raw.get("family")
    path = FAMILIES_DIR / f"{family}.yaml"
    if not family or not path.is_file():
        return None
    try:
        block = (yaml.safe_load(path.read_text()) or {}).get("roi")
    except yaml.YAMLError as err:
        raise PosezooError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file") from err
    return _parse(block, path) if block else None
