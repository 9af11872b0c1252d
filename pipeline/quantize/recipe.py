"""Quantization schemes from ``params.yaml``: what each variant family does, start to end.

``quantize.schemes`` lists the families the pipeline builds (one DVC stage per model × scheme ×
format); ``quantize.recipes.<scheme>`` says how: the weight granularity, the float-model
transforms (cross-layer equalization, bias correction), the exporter settings
(:class:`~pipeline.quantize.config.QuantConfig`: calibration method, activation bits) and an
optional per-layer float fallback searched against an accuracy budget. Every key is checked here,
so a typo in a ``dvc exp run -S`` sweep fails before any work starts.

A scheme's stages read ``quantize.recipes.<scheme>`` (and ``quantize.search.candidates.<scheme>``)
and nothing of the other schemes, so that dvc.yaml can declare exactly those keys and a sweep that
adds or changes one scheme re-runs only its stages. That is why a fallback's reference is written
inside the recipe (``fallback.reference``: changes to this recipe, default per-channel weights)
rather than naming another scheme.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pipeline.atomic import write_json
from pipeline.errors import PosezooError
from pipeline.params import get
from pipeline.quantize.config import PARAM_KEYS, QuantConfig

WEIGHTS = ("per_channel", "per_tensor")
TRANSFORM_KEYS = ("weights", "equalize", "clip_headroom", "equalize_by", "bias_correction", "fallback")
EQUALIZE_BY = ("weights", "activations")
FALLBACK_KEYS = ("budget", "reference", "max_layers")
#: Recipe keys that define what a scheme's variants are (a target's contract): a per-model
#: override or a search candidate may change every other key, never these.
CONTRACT_KEYS = ("weights", "activation_bits", "fallback")
#: A fallback's reference recipe, as changes to the fallback's own recipe.
DEFAULT_REFERENCE: Mapping[str, Any] = {"weights": "per_channel"}
#: File in a prepared-model directory holding the recipe the model was prepared with.
RECIPE = "recipe.json"
#: File in a prepared-model directory naming the layers the fallback search kept in float.
FLOAT_NODES = "float_nodes.json"
#: File in a prepared-model directory holding the shared activation ranges (non-MinMax recipes).
RANGES = "ranges.json"
#: Layers a fallback search may keep in float when the recipe's ``fallback`` sets no ``max_layers``.
FALLBACK_MAX_LAYERS = 64


@dataclass(frozen=True)
class Recipe:
    """One scheme's recipe (see the module docstring)."""

    scheme: str
    weights: str
    equalize: bool = False
    bias_correction: bool = False
    fallback: Mapping[str, Any] | None = None
    clip_headroom: float | None = None
    equalize_by: str = "weights"
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(json.dumps(self.as_params(), sort_keys=True))

    @property
    def per_channel(self) -> bool:
        return self.weights == "per_channel"

    def as_params(self) -> dict[str, Any]:
        """The recipe as a params mapping (what :func:`parse_recipe` reads back), defaults left out."""
        raw: dict[str, Any] = {"weights": self.weights, **dict(self.settings)}
        raw |= {k: True for k in ("equalize", "bias_correction") if getattr(self, k)}
        if self.clip_headroom is not None:
            raw["clip_headroom"] = self.clip_headroom
        if self.equalize_by != "weights":
            raw["equalize_by"] = self.equalize_by
        if self.fallback is not None:
            raw["fallback"] = dict(self.fallback)
        return raw

    @property
    def transforms(self) -> tuple[bool, float | None, bool]:
        """What the float-model preparation depends on (candidates sharing it share one prepared model)."""
        return (self.equalize, self.clip_headroom, self.equalize_by, self.bias_correction)

    def describe(self) -> str:
        """Short human-readable form, e.g. ``per_tensor, eq(headroom 1.5), bc, mse``."""
        parts = [self.weights]
        if self.equalize:
            how = [*(["activations"] if self.equalize_by == "activations" else []), *([f"headroom {self.clip_headroom:g}"] if self.clip_headroom else [])]
            parts.append("eq" + (f"({', '.join(how)})" if how else ""))
        if self.bias_correction:
            parts.append("bc")
        config = self.config()
        parts.append(config.tag or "minmax")
        if config.activation_bits != 8:
            parts.append(f"a{config.activation_bits}")
        return ", ".join(parts)

    def reference(self) -> Recipe:
        """The recipe a fallback's budget is measured against: this one, without the fallback, with
        ``fallback.reference``'s changes (default ``{weights: per_channel}``)."""
        if self.fallback is None:
            raise PosezooError(f"quantize.recipes.{self.scheme} has no fallback, so no reference")
        base = {k: v for k, v in self.as_params().items() if k != "fallback"}
        return parse_recipe({**base, **self.fallback.get("reference", DEFAULT_REFERENCE)}, self.scheme, f"quantize.recipes.{self.scheme}.fallback.reference")

    def fallback_limits(self) -> tuple[float, int]:
        """(drift budget relative to :meth:`reference`, most layers kept in float) of the fallback search."""
        if self.fallback is None:
            raise PosezooError(f"quantize.recipes.{self.scheme} has no fallback, so no fallback budget")
        return float(self.fallback["budget"]), int(self.fallback.get("max_layers", FALLBACK_MAX_LAYERS))

    def config(self, float_nodes: tuple[str, ...] = ()) -> QuantConfig:
        """The exporter settings, with the fallback layers the search chose."""
        return QuantConfig.from_params({**self.settings, "float_nodes": float_nodes}, self.per_channel, f"quantize.recipes.{self.scheme}")

    @property
    def tag(self) -> str:
        """File-name suffix for the float-model transforms (the exporter adds its own)."""
        eq = "eqa" if self.equalize_by == "activations" else "eq"
        return "_".join(t for t, on in ((eq, self.equalize), ("bc", self.bias_correction)) if on)


def recipe_for(params: Mapping[str, Any], scheme: str, path: Path) -> Recipe:
    """The checked recipe of ``scheme`` (``quantize.recipes.<scheme>``)."""
    return parse_recipe(_raw_recipe(params, scheme, path), scheme, f"{path}: quantize.recipes.{scheme}")


def _raw_recipe(params: Mapping[str, Any], scheme: str, path: Path) -> dict[str, Any]:
    recipes = get(dict(params), "quantize.recipes", path)
    if scheme not in recipes:
        raise PosezooError(f"{path}: scheme '{scheme}' has no recipe; add quantize.recipes.{scheme} (e.g. {{weights: per_channel}})")
    return dict(recipes[scheme] or {})


def parse_recipe(raw_recipe: Mapping[str, Any] | None, scheme: str, where: str) -> Recipe:
    """A recipe from its params mapping (``quantize.recipes.<scheme>`` or a chosen ``recipe.json``)."""
    raw = dict(raw_recipe or {})
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
        if not isinstance(fallback.get("reference", {}), Mapping):
            raise PosezooError(
                f"{where}: fallback.reference is {fallback['reference']!r}; write the reference recipe as changes to this one, e.g. reference: {{weights: per_channel}}"
            )
    headroom = raw.pop("clip_headroom", None)
    if headroom is not None and (not isinstance(headroom, (int, float)) or isinstance(headroom, bool) or headroom < 1.0 or not flags["equalize"]):
        raise PosezooError(f"{where}: clip_headroom must be a number >= 1 and needs equalize: true, got {headroom!r}")
    by = raw.pop("equalize_by", "weights")
    if by not in EQUALIZE_BY or (by != "weights" and not flags["equalize"]):
        raise PosezooError(f"{where}: equalize_by must be weights or activations (with equalize: true), got {by!r}")
    recipe = Recipe(scheme, weights, flags["equalize"], flags["bias_correction"], fallback, None if headroom is None else float(headroom), by, raw)
    recipe.config()  # validates the exporter settings now, with the recipe named
    if fallback is not None:
        recipe.reference()
    return recipe


def candidates_for(params: Mapping[str, Any], model: str, scheme: str, path: Path) -> tuple[list[Recipe], str]:
    """(recipes to try for ``model`` in ``scheme``, where they come from).

    ``models.<model>.recipes.<scheme>`` (an explicit choice) wins: one recipe, "override".
    Else ``quantize.search.candidates.<scheme>``, when it lists more than the scheme's own recipe,
    gives "search" candidates, in order. Else the scheme's recipe alone, "scheme". Override and
    candidates are changes to the scheme's recipe; they may not touch its contract
    (:data:`CONTRACT_KEYS`: what the target runs), so every candidate is a valid ``scheme`` variant.
    """
    base = _raw_recipe(params, scheme, path)
    entry = (get(dict(params), "models", path).get(model) or {}).get("recipes") or {}
    if not isinstance(entry, Mapping):
        raise PosezooError(f"{path}: models.{model}.recipes must map a scheme to recipe changes, e.g. {{per_tensor: {{equalize: true}}}}")
    if scheme in entry:
        return [_candidate(base, entry[scheme], scheme, f"{path}: models.{model}.recipes.{scheme}")], "override"
    listed = ((dict(params).get("quantize") or {}).get("search") or {}).get("candidates") or {}
    changes = listed.get(scheme) or [{}]
    if not isinstance(changes, list) or not changes:
        raise PosezooError(f"{path}: quantize.search.candidates.{scheme} must be a list of recipe changes ({{}} is the scheme's own recipe)")
    recipes = [_candidate(base, c, scheme, f"{path}: quantize.search.candidates.{scheme}[{i}]") for i, c in enumerate(changes)]
    unique = list(dict.fromkeys(recipes))
    return unique, ("search" if len(unique) > 1 else "scheme")


def _candidate(base: Mapping[str, Any], change: Any, scheme: str, where: str) -> Recipe:
    if not isinstance(change, Mapping):
        raise PosezooError(f"{where}: a candidate is a mapping of recipe changes, not {change!r}")
    touched = sorted(set(change) & set(CONTRACT_KEYS))
    if touched:
        raise PosezooError(f"{where}: {', '.join(touched)} is the scheme's contract (what the target runs); define another scheme to change it")
    return parse_recipe({**base, **change}, scheme, where)


def write_chosen(prepared_dir: Path, scheme: str, recipe: Recipe, origin: str, float_nodes: list[str]) -> None:
    """Record in a prepared-model directory the recipe chosen for ``scheme`` and its fallback layers.

    The quantize stages read them back with :func:`chosen_recipe` and :func:`chosen_float_nodes`.
    """
    write_json(Path(prepared_dir) / FLOAT_NODES, {"float_nodes": float_nodes})
    write_json(Path(prepared_dir) / RECIPE, {"scheme": scheme, "source": origin, "recipe": recipe.as_params()})


def chosen_float_nodes(prepared_dir: Path) -> tuple[str, ...]:
    """The layers the fallback search kept in float (none for a directory without the record)."""
    made = Path(prepared_dir) / FLOAT_NODES
    return tuple(json.loads(made.read_text())["float_nodes"]) if made.is_file() else ()


def chosen_recipe(params: Mapping[str, Any], scheme: str, prepared_dir: Path, path: Path) -> tuple[Recipe, str]:
    """(recipe, where it came from) a prepared-model directory was made with (its ``recipe.json``).

    A directory without one (the output of `posezoo convert`, used directly) takes the scheme's
    recipe from params.
    """
    made = Path(prepared_dir) / RECIPE
    if not made.is_file():
        return recipe_for(params, scheme, path), "scheme"
    try:
        raw = json.loads(made.read_text())
        recorded, source, recipe = raw["scheme"], raw["source"], raw["recipe"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PosezooError(f"{made}: not a recipe record ({err}); re-run `posezoo optimize` for this scheme") from None
    if recorded != scheme:
        raise PosezooError(f"{made}: prepared for scheme '{recorded}', not '{scheme}'; pass the optimize output of {scheme}")
    return parse_recipe(recipe, scheme, str(made)), str(source)
