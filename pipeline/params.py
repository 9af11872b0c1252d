"""Reading ``params.yaml``: the one place stage parameters come from.

Stages read only the keys ``dvc.yaml`` declares for them, so DVC re-runs exactly the stages whose
parameters changed. Model names are checked against the registry here, before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PosezooError
from pipeline.registry import ModelSpec, load_model

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The parsed params file; a missing or broken file is a one-line error."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PosezooError(f"{path}: cannot read parameters ({str(err).splitlines()[0]}); run from the project root or pass --params") from err
    if not isinstance(params, dict):
        raise PosezooError(f"{path}: parameters must be a mapping; see the README for the layout")
    return params


def get(params: dict[str, Any], dotted: str, path: Path = DEFAULT_PARAMS) -> Any:
    """``params['a']['b']`` for ``'a.b'``, with an error naming the missing key."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PosezooError(f"{path}: parameter '{dotted}' is missing; add it (see the README)")
        node = node[part]
    return node


def model_for(params: dict[str, Any], name: str, path: Path = DEFAULT_PARAMS) -> tuple[ModelSpec, int]:
    """(registry entry, resolution) of a model listed in ``models``; unknown names fail early.

    ``models.<name>.source`` picks another of the entry's sources (e.g. a published int8 file
    to requantize instead of the float release); the default is the registry's ``source``.
    """
    spec = load_model(name)
    models = get(params, "models", path)
    if name not in models:
        raise PosezooError(f"{path}: model '{name}' is not under 'models'; add it or pick one of {', '.join(models)}")
    source_id = models[name].get("source")
    if source_id is not None:
        spec = spec.with_source(source_id)
    resolution = int(models[name].get("resolution", spec.input.height))
    if resolution not in spec.resolutions or resolution != spec.input.height:
        raise PosezooError(
            f"{path}: models.{name}.resolution is {resolution}; this source supports {list(spec.resolutions)} "
            f"(only the native {spec.input.height} until resolution sweeps land)"
        )
    return spec, resolution
