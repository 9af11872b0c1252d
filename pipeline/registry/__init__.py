"""The model registry: one YAML file per model in ``pipeline/registry/models/``.

Models are data, not code (like Open Model Zoo's ``model.yml`` or torchvision's weights
``meta``): sources with sha256, input spec, output decoding, keypoint schema and the reference
figures the seed cards publish. Adding a model is adding a file; this module only loads and
validates entries so that a typo fails at load time with the file name, not deep in a stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.errors import PosezooError

MODELS_DIR = Path(__file__).parent / "models"
#: Extra registry folders (os.pathsep-separated), searched before the built-in one: private
#: models, and the tiny models the tests build.
REGISTRY_ENV = "POSEZOO_REGISTRY"

_LAYOUTS = {"NHWC", "NCHW"}
_COLORS = {"RGB", "BGR"}
_RESIZES = {"stretch", "letterbox"}


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input tensor."""

    height: int
    width: int
    channels: int
    layout: str
    color: str
    value_range: tuple[float, float]
    resize: str

    def scale_pixels(self, pixels_uint8: Any) -> Any:
        """Map uint8 pixels to the model's value range (float32)."""
        lo, hi = self.value_range
        return (pixels_uint8.astype("float32") * ((hi - lo) / 255.0) + lo).astype("float32")


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry (see any file in ``pipeline/registry/models`` for the fields)."""

    name: str
    path: Path
    input: InputSpec
    source: Mapping[str, Any]
    decoder: Mapping[str, Any]
    keypoint_output: int
    keypoint_count: int
    keypoint_names: Any
    resolutions: tuple[int, ...]
    raw: Mapping[str, Any] = field(repr=False)

    def with_source(self, source_id: str) -> "ModelSpec":
        """This entry with another of its declared sources as the one the pipeline starts from."""
        sources = {s["id"]: s for s in self.raw["sources"]}
        if source_id not in sources:
            raise PosezooError(f"{self.path}: source '{source_id}' is not among sources {sorted(sources)}; pick one of them")
        return replace(self, source=sources[source_id])

    def source_resolutions(self, source: Mapping[str, Any]) -> tuple[int, ...]:
        """Input sizes a source can give: its own ``resolutions`` list, else the entry's native size.

        A fixed-size file lists only its own size (ST's per-resolution YOLOv8n files); a fully
        convolutional source lists every size its input can be reshaped to (``posezoo convert``
        reshapes the float model and verifies it against the source run at that size).
        """
        return tuple(int(r) for r in source.get("resolutions", [self.input.height]))

    def at_resolution(self, resolution: int) -> "ModelSpec":
        """This entry with a square ``resolution`` × ``resolution`` input (every stage reads ``input``)."""
        return replace(self, input=replace(self.input, height=resolution, width=resolution))


def refuse_renamed(block: Mapping[str, Any] | None, renamed: Mapping[str, str], where: str) -> None:
    """One-line error for a YAML key that was renamed (old name → new name, same value and meaning).

    Renames keep one name per meaning across params.yaml, calibration/sources.yaml and the
    registry; a file still using an old name fails here instead of silently taking the default.
    """
    for old, new in renamed.items():
        if isinstance(block, Mapping) and old in block:
            raise PosezooError(f"{where}: '{old}' is now called '{new}' (same value, same meaning); rename it")


def _require(entry: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in entry:
        raise PosezooError(f"{path}: registry entry has no '{key}'; add it (see face_landmark.yaml)")
    return entry[key]


def _parse(path: Path) -> ModelSpec:
    try:
        entry = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PosezooError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file") from err
    name = _require(entry, "name", path)
    if name != path.stem:
        raise PosezooError(f"{path}: name '{name}' differs from the file name; rename one of them")
    inp = _require(entry, "input", path)
    for key, allowed in (("layout", _LAYOUTS), ("color", _COLORS), ("resize", _RESIZES)):
        if inp.get(key) not in allowed:
            raise PosezooError(f"{path}: input.{key} is {inp.get(key)!r}; use one of {sorted(allowed)}")
    spec = InputSpec(
        height=int(inp["height"]),
        width=int(inp["width"]),
        channels=int(inp["channels"]),
        layout=inp["layout"],
        color=inp["color"],
        value_range=(float(inp["range"][0]), float(inp["range"][1])),
        resize=inp["resize"],
    )
    sources = {s["id"]: s for s in _require(entry, "sources", path)}
    source_id = _require(entry, "source", path)
    if source_id not in sources:
        raise PosezooError(f"{path}: source '{source_id}' is not among sources {sorted(sources)}")
    resolutions = tuple(int(r) for r in _require(entry, "resolutions", path))
    for source in sources.values():
        extra = sorted(set(int(r) for r in source.get("resolutions", [spec.height])) - set(resolutions))
        if extra:
            raise PosezooError(f"{path}: source '{source['id']}' lists resolutions {extra} the entry's resolutions {list(resolutions)} do not; add them there or remove them")
    keypoints = _require(entry, "keypoints", path)
    refuse_renamed(entry.get("accuracy"), {"crop_factor": "box_scale"}, f"{path}: accuracy")
    return ModelSpec(
        name=name,
        path=path,
        input=spec,
        source=sources[source_id],
        decoder=_require(entry, "decoder", path),
        keypoint_output=int(_require(entry, "outputs", path)["keypoints"]),
        keypoint_count=int(keypoints["count"]),
        keypoint_names=keypoints.get("names"),
        resolutions=resolutions,
        raw=entry,
    )


def registry_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, in order: ``$POSEZOO_REGISTRY`` then the built-in one."""
    extra = [Path(p) for p in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if p]
    return [*extra, MODELS_DIR]


def model_names() -> list[str]:
    """Names of every registry entry, sorted."""
    return sorted({p.stem for d in registry_dirs() for p in d.glob("*.yaml")})


def load_model(name: str) -> ModelSpec:
    """Load and validate the registry entry ``name``; unknown names list the known ones."""
    for folder in registry_dirs():
        path = folder / f"{name}.yaml"
        if path.is_file():
            return _parse(path)
    raise PosezooError(f"unknown model '{name}' (params.yaml or command line); known models: {', '.join(model_names())}")
