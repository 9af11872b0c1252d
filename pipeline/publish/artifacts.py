"""The ``artifacts:`` section of ``dvc.yaml``: one DVC model artifact per int8 variant stage.

DVC's model registry (``dvc artifacts get``) reads artifacts only from a literal ``artifacts:``
section; unlike ``stages`` it supports neither templating nor ``foreach`` (treeverse/dvc #8696),
while the variants themselves come from ``params.yaml`` (models × schemes × formats). This module
derives the section from the params, checks it (``posezoo publish`` refuses to publish a stale
one) and rewrites it in place with ruamel.yaml, which keeps the rest of ``dvc.yaml`` — comments
included — byte for byte.

Each artifact is a quantize stage's output directory (``build/int8/<stage key>``): the model file,
whose name carries the recipe (``_pt_bc`` …), plus its ``.quant.json`` saying how it was made.
The directory path is stable across recipe changes; the file name is not.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pipeline.errors import PosezooError
from pipeline.params import get, model_for

SECTION = "artifacts"


def artifact_name(model: str, scheme: str, fmt: str) -> str:
    """DVC artifact names allow lower-case letters, digits and dashes: the stage key, dashed."""
    return f"{model}-{scheme}-{fmt}".replace("_", "-").lower()


def expected_artifacts(params: dict[str, Any], params_path: Path) -> dict[str, dict[str, Any]]:
    """The artifacts the current params produce, in params order."""
    entries: dict[str, dict[str, Any]] = {}
    for model in get(params, "models", params_path):
        spec, resolution = model_for(params, model, params_path)
        description = " ".join(str(spec.raw.get("description", spec.name)).split())
        for scheme in get(params, "quantize.schemes", params_path):
            for fmt in get(params, "quantize.formats", params_path):
                entries[artifact_name(model, scheme, fmt)] = {
                    "path": f"build/int8/{model}-{scheme}-{fmt}",
                    "type": "model",
                    "desc": f"{spec.name} {resolution}x{resolution}, int8 {scheme} {fmt} (recipe quantize.recipes.{scheme}). {description}",
                    "labels": [str(spec.raw.get("task", "pose")), scheme, fmt, f"{resolution}px"],
                    "meta": {"model": spec.name, "scheme": scheme, "format": fmt, "resolution": resolution, "source": spec.source["id"]},
                }
    return entries


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # dvc.yaml's own style: list dashes indented under their key
    return yaml


def _load(dvc_yaml: Path) -> Any:
    try:
        return _yaml().load(Path(dvc_yaml).read_text())
    except Exception as err:  # ruamel raises many parser error types
        raise PosezooError(f"{dvc_yaml}: cannot read it ({str(err).splitlines()[0]}); fix the YAML") from err


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts / lists, for comparison."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def stale_artifacts(dvc_yaml: Path, params: dict[str, Any], params_path: Path) -> list[str]:
    """Names whose entry is missing, extra or different in ``dvc.yaml``; empty when in sync."""
    current = _plain((_load(dvc_yaml) or {}).get(SECTION) or {})
    expected = expected_artifacts(params, params_path)
    return sorted(name for name in set(current) | set(expected) if current.get(name) != expected.get(name))


def sync_artifacts(dvc_yaml: Path, params: dict[str, Any], params_path: Path) -> list[str]:
    """Rewrite ``dvc.yaml``'s artifacts section from the params; returns the names that changed."""
    changed = stale_artifacts(dvc_yaml, params, params_path)
    if not changed:
        return []
    document = _load(dvc_yaml)
    document[SECTION] = expected_artifacts(params, params_path)
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    tmp = Path(dvc_yaml).with_name(Path(dvc_yaml).name + ".tmp")
    tmp.write_text(buffer.getvalue())
    tmp.replace(dvc_yaml)
    return changed
