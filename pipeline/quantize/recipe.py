"""Quantization schemes from ``params.yaml``: what each variant family does, start to end.

``quantize.schemes`` lists the families the pipeline builds (one DVC stage per model × scheme ×
format); ``quantize.recipes.<scheme>`` says how: the weight granularity, the float-model
transforms (cross-layer equalization, bias correction), the exporter settings
(:class:`~pipeline.quantize.config.QuantConfig`: calibration method, activation bits) and an
optional per-layer float fallback searched against an accuracy budget. Every key is checked here,
so a typo in a ``dvc exp run -S`` sweep fails before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import PosezooError
from pipeline.params import get
from pipeline.quantize.config import PARAM_KEYS, QuantConfig

WEIGHTS = ("per_channel", "per_tensor")
TRANSFORM_KEYS = ("weights", "equalize", "clip_headroom", "bias_correction", "fallback")
FALLBACK_KEYS = ("budget", "reference", "max_layers")
#: File in a prepared-model directory naming the layers the fallback search kept in float.
FLOAT_NODES = "float_nodes.json"
#: File in a prepared-model directory holding the shared activation ranges (non-MinMax recipes).
RANGES = "ranges.json"
#: Suffix of the file beside each variant that records how it was made.
QUANT_SIDECAR = ".quant.json"


@dataclass(frozen=True)
class Recipe:
    """One scheme's recipe (see the module docstring)."""

    scheme: str
    weights: str
    equalize: bool = False
    bias_correction: bool = False
    fallback: Mapping[str, Any] | None = None
    clip_headroom: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def per_channel(self) -> bool:
        return self.weights == "per_channel"

    def config(self, float_nodes: tuple[str, ...] = ()) -> QuantConfig:
        """The exporter settings, with the fallback layers the search chose."""
        return QuantConfig.from_params({**self.settings, "float_nodes": float_nodes}, self.per_channel, f"quantize.recipes.{self.scheme}")

    @property
    def tag(self) -> str:
        """File-name suffix for the float-model transforms (the exporter adds its own)."""
        return "_".join(t for t, on in (("eq", self.equalize), ("bc", self.bias_correction)) if on)


def recipe_for(params: Mapping[str, Any], scheme: str, path: Path) -> Recipe:
    """The checked recipe of ``scheme`` (must be listed in ``quantize.schemes``)."""
    schemes = get(dict(params), "quantize.schemes", path)
    if scheme not in schemes:
        raise PosezooError(f"{path}: scheme '{scheme}' is not in quantize.schemes {list(schemes)}; add it there")
    raw = dict(get(dict(params), f"quantize.recipes.{scheme}", path) or {})
    where = f"{path}: quantize.recipes.{scheme}"
    # float_nodes is what the fallback search decides, never set by hand in a recipe
    unknown = sorted((set(raw) - set(TRANSFORM_KEYS) - set(PARAM_KEYS)) | ({"float_nodes"} & set(raw)))
    if unknown:
        raise PosezooError(f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(TRANSFORM_KEYS + tuple(k for k in PARAM_KEYS if k != 'float_nodes'))}")
    weights = raw.pop("weights", None)
    if weights not in WEIGHTS:
        raise PosezooError(f"{where}: weights is {weights!r}; use per_channel or per_tensor")
    flags = {k: raw.pop(k, False) for k in ("equalize", "bias_correction")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise PosezooError(f"{where}: {key} must be true or false, not {value!r}")
    fallback = raw.pop("fallback", None)
    if fallback is not None:
        if not isinstance(fallback, Mapping) or set(fallback) - set(FALLBACK_KEYS) or "budget" not in fallback:
            raise PosezooError(f"{where}: fallback needs budget (and optionally reference, max_layers), got {fallback!r}")
        if fallback.get("reference", "per_channel") not in schemes:
            raise PosezooError(f"{where}: fallback.reference '{fallback.get('reference')}' is not a scheme in quantize.schemes")
    headroom = raw.pop("clip_headroom", None)
    if headroom is not None and (not isinstance(headroom, (int, float)) or isinstance(headroom, bool) or headroom < 1.0 or not flags["equalize"]):
        raise PosezooError(f"{where}: clip_headroom must be a number >= 1 and needs equalize: true, got {headroom!r}")
    recipe = Recipe(scheme, weights, flags["equalize"], flags["bias_correction"], fallback, None if headroom is None else float(headroom), raw)
    recipe.config()  # validates the exporter settings now, with the recipe named
    return recipe
