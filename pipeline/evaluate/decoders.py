"""Decoders: raw model outputs → keypoints (K, 2) as (x, y) in input pixels.

One function per output kind, chosen by the registry's ``decoder.kind``; each reads its layout
facts (values per point, number of points, coordinate convention) from the registry entry, so a
new model with a known output kind needs no code.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pipeline.errors import PosezooError
from pipeline.registry import ModelSpec

Decoder = Callable[[Sequence[np.ndarray], ModelSpec], np.ndarray]


def _to_pixels(xy: np.ndarray, coords: str, spec: ModelSpec) -> np.ndarray:
    if coords == "input_pixels":
        return xy
    if coords == "normalized_xy":
        return xy * np.array([spec.input.width, spec.input.height], dtype=np.float32)
    raise PosezooError(f"{spec.path}: decoder.coords {coords!r} is unknown; use input_pixels or normalized_xy")


def landmarks_flat(outputs: Sequence[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """Flat regression output (K·V values: x, y, then V-2 extras per point), e.g. MediaPipe landmarks."""
    dec = spec.decoder
    per_point = int(dec["values_per_point"])
    values = np.asarray(outputs[spec.keypoint_output], dtype=np.float32).reshape(-1, per_point)
    count = int(dec.get("num_points", spec.keypoint_count))
    return _to_pixels(values[:count, :2], dec["coords"], spec)


def movenet_singlepose(outputs: Sequence[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """MoveNet SinglePose (1, 1, K, 3) = y, x, score, normalized to the input."""
    values = np.asarray(outputs[spec.keypoint_output], dtype=np.float32).reshape(-1, 3)
    yx = values[: spec.keypoint_count, :2]
    return yx[:, ::-1] * np.array([spec.input.width, spec.input.height], dtype=np.float32)


DECODERS: Mapping[str, Decoder] = {
    "landmarks_flat": landmarks_flat,
    "movenet_singlepose": movenet_singlepose,
}


def decoder_for(spec: ModelSpec) -> Decoder:
    """The decoder a registry entry names; unknown kinds are a clear error, never a silent guess."""
    kind: Any = spec.decoder.get("kind")
    if kind not in DECODERS:
        raise PosezooError(
            f"{spec.path}: decoder.kind {kind!r} has no decoder in this version (have: {', '.join(DECODERS)}); "
            "drift for this model cannot be measured yet"
        )
    return DECODERS[kind]
