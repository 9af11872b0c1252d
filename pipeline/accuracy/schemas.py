"""Dataset keypoint schemas: which points a dataset annotates, in which order, and how errors are normalised.

A schema is data (``pipeline/accuracy/schemas/<name>.yaml``), like the model registry: the point
names and count, the task (body, face or hand) and the one fact each metric needs to be
comparable with published figures — COCO's OKS sigmas, the inter-ocular corner pair of a face
markup, or "relative to the box size" for hands. Models are compared with a dataset through the
registry's ``accuracy.maps`` (dataset index → model index), never by assuming the orders agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.errors import PosezooError

SCHEMAS_DIR = Path(__file__).parent / "schemas"
TASKS = ("body", "face", "hand")
#: How a schema's errors are normalised: COCO OKS (needs ``sigmas``), inter-ocular distance
#: (needs ``interocular``), or the annotation box size.
NORMALIZATIONS = ("oks", "interocular", "bbox")


@dataclass(frozen=True)
class Schema:
    """One dataset keypoint layout (see any file in ``pipeline/accuracy/schemas``)."""

    name: str
    task: str
    count: int
    names: tuple[str, ...]
    normalize: str
    sigmas: tuple[float, ...] | None = None  # OKS falloff per keypoint (normalize: oks)
    interocular: tuple[int, int] | None = None  # outer eye corner indices (normalize: interocular)


def schema_names() -> list[str]:
    """Names of every schema file, sorted."""
    return sorted(p.stem for p in SCHEMAS_DIR.glob("*.yaml"))


def _fail(path: Path, problem: str) -> PosezooError:
    return PosezooError(f"{path}: {problem}; fix the schema file (see coco17.yaml)")


def _parse(path: Path) -> Schema:
    try:
        entry: Mapping[str, Any] = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise _fail(path, f"not valid YAML ({str(err).splitlines()[0]})") from err
    missing = [k for k in ("name", "task", "count", "names", "normalize") if k not in entry]
    if missing:
        raise _fail(path, f"missing {', '.join(missing)}")
    if entry["name"] != path.stem:
        raise _fail(path, f"name '{entry['name']}' differs from the file name")
    if entry["task"] not in TASKS or entry["normalize"] not in NORMALIZATIONS:
        raise _fail(path, f"task must be one of {TASKS} and normalize one of {NORMALIZATIONS}")
    count, names = int(entry["count"]), tuple(str(n) for n in entry["names"])
    if len(names) != count or len(set(names)) != count:
        raise _fail(path, f"count is {count} but names has {len(names)} entries ({len(set(names))} distinct)")
    sigmas = tuple(float(s) for s in entry["sigmas"]) if "sigmas" in entry else None
    pair = [int(i) for i in entry.get("interocular", [])]
    if entry["normalize"] == "oks" and (sigmas is None or len(sigmas) != count):
        raise _fail(path, f"normalize: oks needs 'sigmas' with {count} values")
    if entry["normalize"] == "interocular" and (len(pair) != 2 or not all(0 <= i < count for i in pair)):
        raise _fail(path, f"normalize: interocular needs 'interocular' as two indices in 0..{count - 1}")
    interocular = (pair[0], pair[1]) if len(pair) == 2 else None
    return Schema(entry["name"], entry["task"], count, names, entry["normalize"], sigmas, interocular)


@lru_cache(maxsize=None)
def load_schema(name: str) -> Schema:
    """The schema ``name`` (a file in ``pipeline/accuracy/schemas``)."""
    path = SCHEMAS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise PosezooError(f"keypoint schema '{name}' is unknown; use one of {', '.join(schema_names())}")
    return _parse(path)


def schema_for_count(count: int, origin: str = "", hint: str = "") -> Schema:
    """The one schema with ``count`` keypoints; unknown or ambiguous counts name the known schemas.

    ``origin`` (the dataset file) starts the error message and ``hint`` (``"; ..."``) ends it.
    """
    schemas = [load_schema(n) for n in schema_names()]
    matches = [s for s in schemas if s.count == count]
    known = ", ".join(f"{s.name} ({s.count})" for s in schemas)
    where = f"{origin}: " if origin else ""
    if not matches:
        raise PosezooError(f"{where}no keypoint schema has {count} points (known: {known}); add a schema file or convert the dataset{hint}")
    if len(matches) > 1:
        raise PosezooError(
            f"{where}{count} keypoints fit several schemas ({', '.join(s.name for s in matches)}); name the schema explicitly (known: {known}){hint}"
        )
    return matches[0]
