"""Quantization schemes and recipes from params.yaml: checked before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PosezooError
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.recipe import recipe_for

P = Path("params.yaml")


def _params(**recipes: dict) -> dict:
    return {"quantize": {"schemes": list(recipes), "recipes": recipes}}


def test_recipe_gives_transforms_and_exporter_settings() -> None:
    params = _params(per_channel={"weights": "per_channel"}, pt={"weights": "per_tensor", "calibration": "mse", "equalize": True, "bias_correction": True})
    recipe = recipe_for(params, "pt", P)
    assert (recipe.per_channel, recipe.equalize, recipe.bias_correction, recipe.tag) == (False, True, True, "eq_bc")
    assert recipe.config(("Conv_3",)) == QuantConfig(False, "mse", float_nodes=("Conv_3",))
    assert recipe_for(params, "per_channel", P).config().is_default


def test_the_repository_params_are_valid() -> None:
    import yaml

    params = yaml.safe_load(Path(__file__).resolve().parents[2].joinpath("params.yaml").read_text())
    for scheme in params["quantize"]["recipes"]:
        params["quantize"]["schemes"] = list(params["quantize"]["recipes"])
        recipe_for(params, scheme, P)


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"weights": "per_row"}, "weights is 'per_row'"),
        ({"weights": "per_tensor", "equalise": True}, "unknown key.*equalise"),
        ({"weights": "per_tensor", "float_nodes": ["Conv_0"]}, "unknown key.*float_nodes"),
        ({"weights": "per_tensor", "equalize": "yes"}, "equalize must be true or false"),
        ({"weights": "per_tensor", "calibration": "kl"}, r"quantize.recipes.x: calibration 'kl' is unknown"),
        ({"weights": "per_tensor", "fallback": {"max_layers": 3}}, "fallback needs budget"),
        ({"weights": "per_tensor", "fallback": {"budget": 1.25, "reference": "nope"}}, "reference 'nope' is not a scheme"),
    ],
)
def test_bad_recipes_are_one_line_errors(recipe: dict, message: str) -> None:
    with pytest.raises(PosezooError, match=message) as err:
        recipe_for(_params(x=recipe), "x", P)
    assert "\n" not in str(err.value)


def test_scheme_must_be_listed() -> None:
    with pytest.raises(PosezooError, match="scheme 'pt' is not in quantize.schemes"):
        recipe_for(_params(per_channel={"weights": "per_channel"}), "pt", P)
