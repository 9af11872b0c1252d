"""The ``<variant>.quant.json`` beside every int8 variant: how `posezoo quantize` made it.

`posezoo evaluate` copies it into its metrics as the ``quantization`` block (which `posezoo
recommend` reads), and `posezoo cards` falls back to it; the suffix, the writer and the reader
live here together so the format is defined once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from pipeline.atomic import write_json
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.recipe import Recipe

#: Suffix of the file beside each variant that records how it was made.
QUANT_SIDECAR = ".quant.json"


def sidecar_path(model: Path) -> Path:
    """The sidecar of the model file ``model`` (same stem, in the same folder)."""
    model = Path(model)
    return model.with_name(model.stem + QUANT_SIDECAR)


def write_sidecar(model: Path, scheme: str, recipe: Recipe, origin: str, config: QuantConfig, extra: Mapping[str, Any]) -> None:
    """Record beside ``model`` the scheme, the recipe (and where it came from) and the exporter's settings.

    ``extra`` is what the exporter adds (an OpenVINO IR's ``nncf`` block).
    """
    write_json(
        sidecar_path(model),
        {
            "scheme": scheme,
            "granularity": recipe.weights,
            "activation_bits": config.activation_bits,
            "calibration": config.calibration,
            **({"percentile": config.percentile} if config.calibration == "percentile" else {}),
            "equalize": recipe.equalize,
            "bias_correction": recipe.bias_correction,
            **({"clip_headroom": recipe.clip_headroom} if recipe.clip_headroom is not None else {}),
            "recipe": recipe.as_params(),
            "recipe_source": origin,
            "float_layers": len(config.float_nodes),
            "float_nodes": list(config.float_nodes),
            **extra,
        },
    )


def read_sidecar(model: Path) -> dict[str, Any] | None:
    """The sidecar of ``model``; None when there is none (a model `posezoo quantize` did not make)."""
    path = sidecar_path(model)
    return json.loads(path.read_text()) if path.is_file() else None
