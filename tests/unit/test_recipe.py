"""Quantization schemes and recipes from params.yaml: checked before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PosezooError
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.recipe import candidates_for, parse_recipe, recipe_for

P = Path("params.yaml")


def _params(**recipes: dict) -> dict:
    return {"quantize": {"schemes": list(recipes), "recipes": recipes}}


def test_recipe_gives_transforms_and_exporter_settings() -> None:
    params = _params(per_channel={"weights": "per_channel"}, pt={"weights": "per_tensor", "calibration": "mse", "equalize": True, "bias_correction": True})
    recipe = recipe_for(params, "pt", P)
    assert (recipe.per_channel, recipe.equalize, recipe.bias_correction, recipe.tag) == (False, True, True, "eq_bc")
    assert recipe.config(("Conv_3",)) == QuantConfig(False, "mse", float_nodes=("Conv_3",))
    assert recipe_for(params, "per_channel", P).config() == QuantConfig(True)  # MinMax, 8-bit, no float layers: the original export


def test_every_repository_recipe_is_valid_and_has_search_candidates() -> None:
    """Each recipe of params.yaml reads back as written (no key dropped or misread), and each
    model's search candidates are distinct variants of it with its contract (weights, activation
    bits, fallback) untouched. dvc.yaml declares quantize.search.candidates.<scheme> for each
    scheme's stages: DVC needs the key."""
    import yaml

    params = yaml.safe_load(Path(__file__).resolve().parents[2].joinpath("params.yaml").read_text())
    recipes = params["quantize"]["recipes"]
    assert set(params["quantize"]["schemes"]) <= set(recipes)
    assert set(params["quantize"]["search"]["candidates"]) == set(recipes)
    for scheme, written in recipes.items():
        recipe = recipe_for(params, scheme, P)
        assert recipe.as_params() == written and parse_recipe(written, scheme, "params.yaml") == recipe, scheme
        for model in params["models"]:
            candidates, source = candidates_for(params, model, scheme, P)
            assert len(set(candidates)) == len(candidates) and (source == "scheme") == (candidates == [recipe]), (model, scheme)
            contract = (recipe.weights, recipe.config().activation_bits, recipe.fallback)
            assert all((c.weights, c.config().activation_bits, c.fallback) == contract for c in candidates), (model, scheme)
    assert recipe_for(params, "per_tensor_fallback", P).describe() == "per_tensor, minmax"


def test_a_fallback_reference_is_this_recipe_with_its_changes() -> None:
    fallback = {"weights": "per_tensor", "calibration": "mse", "fallback": {"budget": 1.25}}
    reference = recipe_for(_params(fb=fallback), "fb", P).reference()
    assert (reference.weights, reference.fallback, reference.config().calibration) == ("per_channel", None, "mse")
    fallback["fallback"]["reference"] = {"calibration": "minmax"}
    reference = recipe_for(_params(fb=fallback), "fb", P).reference()
    assert (reference.weights, reference.config().calibration) == ("per_tensor", "minmax")


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"weights": "per_row"}, "weights is 'per_row'"),
        ({"weights": "per_tensor", "equalise": True}, "unknown key.*equalise"),
        ({"weights": "per_tensor", "float_nodes": ["Conv_0"]}, "unknown key.*float_nodes"),
        ({"weights": "per_tensor", "equalize": "yes"}, "equalize must be true or false"),
        ({"weights": "per_tensor", "calibration": "kl"}, r"quantize.recipes.x: calibration 'kl' is unknown"),
        ({"weights": "per_tensor", "fallback": {"max_layers": 3}}, "fallback needs budget"),
        ({"weights": "per_tensor", "fallback": {"budget": 1.25, "reference": "per_channel"}}, "fallback.reference is 'per_channel'; write the reference recipe as changes"),
        ({"weights": "per_tensor", "fallback": {"budget": 1.25, "reference": {"weights": "per_row"}}}, "fallback.reference: weights is 'per_row'"),
    ],
)
def test_bad_recipes_are_one_line_errors(recipe: dict, message: str) -> None:
    with pytest.raises(PosezooError, match=message) as err:
        recipe_for(_params(x=recipe), "x", P)
    assert "\n" not in str(err.value)


def test_a_scheme_needs_a_recipe() -> None:
    with pytest.raises(PosezooError, match=r"scheme 'pt' has no recipe; add quantize.recipes.pt"):
        recipe_for(_params(per_channel={"weights": "per_channel"}), "pt", P)
