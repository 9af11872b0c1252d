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
    """(registry entry at the asked resolution, resolution) of a model listed in ``models``.

    Unknown names, resolutions the registry does not list and sources that cannot give the asked
    resolution fail here, in the first stage, before any download or conversion. The returned
    entry's ``input`` has the asked size, so every stage preprocesses for it.

    ``models.<name>.source`` picks another of the entry's sources (e.g. a published int8 file
    to requantize instead of the float release). Without it, the registry's default source is
    used if it gives the resolution, else the first source of the same format that does, else of
    any format (ST publishes one YOLOv8n file per resolution, so
    ``-S models.yolov8n_pose.resolution=320`` alone picks the 320 file).
    """
    spec = load_model(name)
    models = get(params, "models", path)
    if name not in models:
        raise PosezooError(f"{path}: model '{name}' is not under 'models'; add it or pick one of {', '.join(models)}")
    entry = models[name] or {}
    resolution = int(entry.get("resolution", spec.input.height))
    if resolution not in spec.resolutions:
        raise PosezooError(
            f"{path}: models.{name}.resolution is {resolution}; {spec.path.name} lists {list(spec.resolutions)} as valid; pick one of them"
        )
    source_id = entry.get("source")
    if source_id is not None:
        spec = spec.with_source(source_id)
        if resolution not in spec.source_resolutions(spec.source):
            able = [s["id"] for s in spec.raw["sources"] if resolution in spec.source_resolutions(s)]
            raise PosezooError(
                f"{path}: source '{source_id}' of {name} gives {list(spec.source_resolutions(spec.source))} px only, not {resolution}; "
                f"use models.{name}.source {' or '.join(able) if able else '(none gives it)'} or another resolution"
            )
    elif resolution not in spec.source_resolutions(spec.source):
        fmt = spec.source["format"]
        able = [s["id"] for s in sorted(spec.raw["sources"], key=lambda s: s["format"] != fmt) if resolution in spec.source_resolutions(s)]
        if not able:
            raise PosezooError(f"{spec.path}: no source of {name} gives {resolution} px; fix the entry's resolutions")
        spec = spec.with_source(able[0])
    return spec.at_resolution(resolution), resolution
