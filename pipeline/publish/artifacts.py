"""``artifacts/dvc.yaml``: one DVC model artifact per int8 variant stage, generated from params.

DVC's model registry (``dvc artifacts get``) reads artifacts only from a literal ``artifacts:``
section; unlike ``stages`` it supports neither templating nor ``foreach`` (treeverse/dvc #8696),
while the variants themselves come from ``params.yaml`` (models × schemes × formats). DVC reads
the section from any ``dvc.yaml`` of the repository, so it lives in its own
``artifacts/dvc.yaml`` (:data:`ARTIFACTS_FILE`), leaving the pipeline's ``dvc.yaml`` to stages
and plots. A ``dvc.yaml`` in a sub-folder prefixes its artifacts' names with the folder
(``artifacts:<name>``, git tags ``artifacts=<name>@<version>``) and resolves their paths from
there (``../build/int8/…``). The folder is no stage output, so DVC never owns or removes the file.
This module derives the file from the params, checks it (``posezoo publish`` refuses to publish
a stale one) and rewrites it.

Each artifact is a quantize stage's output directory (``build/int8/<stage key>``): the model file,
whose name carries the recipe (``_pt_bc`` …), plus its ``.quant.json`` saying how it was made.
The directory path is stable across recipe changes; the file name is not.
"""

from __future__ import annotations

import io
import posixpath
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text
from pipeline.errors import PosezooError
from pipeline.params import get, model_for
from pipeline.quantize import expected_variants, variant_key

SECTION = "artifacts"
#: The dvc.yaml holding the artifacts, relative to the project root.
ARTIFACTS_FILE = Path("artifacts") / "dvc.yaml"
_HEADER = (
    "# Generated from params.yaml by `posezoo publish --sync-artifacts`; do not edit. One DVC model\n"
    "# artifact per int8 variant: `dvc artifacts get <repo> artifacts:<name>` (pipeline/publish/artifacts.py).\n"
)


def artifact_name(model: str, scheme: str, fmt: str) -> str:
    """DVC artifact names allow lower-case letters, digits and dashes: the stage key, dashed."""
    return variant_key(model, scheme, fmt).replace("_", "-").lower()


def full_name(name: str) -> str:
    """The name users and git tags know the artifact by: ``artifacts:<name>`` (its folder first)."""
    return f"{ARTIFACTS_FILE.parent.as_posix()}:{name}"


def expected_artifacts(params: dict[str, Any], params_path: Path) -> dict[str, dict[str, Any]]:
    """The artifacts the current params produce, in params order."""
    entries: dict[str, dict[str, Any]] = {}
    for model in get(params, "models", params_path):
        spec, resolution = model_for(params, model, params_path)
        description = " ".join(str(spec.raw.get("description", spec.name)).split())
        for scheme, fmt in expected_variants(params, params_path):
            entries[artifact_name(model, scheme, fmt)] = {
                "path": posixpath.relpath(f"build/int8/{variant_key(model, scheme, fmt)}", ARTIFACTS_FILE.parent.as_posix()),
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


def _load(path: Path) -> Any:
    """The YAML document at ``path``; None when the file does not exist yet."""
    if not Path(path).exists():
        return None
    try:
        return _yaml().load(Path(path).read_text())
    except Exception as err:  # ruamel raises many parser error types
        raise PosezooError(f"{path}: cannot read it ({str(err).splitlines()[0]}); run `posezoo publish --sync-artifacts`") from err


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts / lists, for comparison."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def stale_artifacts(artifacts_file: Path, params: dict[str, Any], params_path: Path) -> list[str]:
    """Names whose entry is missing, extra or different in ``artifacts_file``; empty when in sync."""
    current = _plain((_load(artifacts_file) or {}).get(SECTION) or {})
    expected = expected_artifacts(params, params_path)
    return sorted(name for name in set(current) | set(expected) if current.get(name) != expected.get(name))


def sync_artifacts(artifacts_file: Path, params: dict[str, Any], params_path: Path) -> list[str]:
    """(Re)write ``artifacts_file`` from the params; returns the names that changed."""
    changed = stale_artifacts(artifacts_file, params, params_path)
    if not changed:
        return []
    buffer = io.StringIO(_HEADER)
    buffer.seek(0, io.SEEK_END)
    _yaml().dump({SECTION: expected_artifacts(params, params_path)}, buffer)
    write_text(artifacts_file, buffer.getvalue())
    return changed
