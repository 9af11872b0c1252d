"""Calibration source declarations (``calibration/sources.yaml``) resolved to local photos.

Three kinds: ``pypi-photos`` (real photos inside pinned PyPI packages — the embedded default,
reachable on a machine that sees only PyPI), ``folder`` and ``coco`` (a COCO-style JSON whose
annotated boxes give the crops). A ``pypi-photos`` entry with ``grid: [rows, cols]`` is a contact
sheet of separate pictures: each tile is one photo for the subject finder (a detector run on the
whole sheet sees 25 small pictures, not one scene). Each resolved :class:`Photo` carries its sha256 so the manifest
pins exactly which bytes calibrated a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.calibration.images import IMAGE_SUFFIXES
from pipeline.errors import PosezooError
from pipeline.fetch import fetch, sha256_file
from pipeline.registry import refuse_renamed


@dataclass(frozen=True)
class Photo:
    """One distinct image file a source offers."""

    id: str
    origin: str
    path: Path
    sha256: str
    split: str | None = None  # fixed split ("calibration"/"holdout") or None to draw with the seed
    boxes: tuple[tuple[float, float, float, float], ...] = field(default=())  # x, y, w, h (COCO)
    tile: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1: one picture of a contact sheet (``grid``)
    sheet: str | None = None  # the contact sheet's own id, for a tile

    def whole(self) -> "Photo":
        """The file as one photo (a contact sheet's tiles collapse to the sheet)."""
        return replace(self, id=self.sheet, tile=None, sheet=None) if self.sheet else self


def _tiles(item: Mapping[str, Any], path: Path) -> list[tuple[int, int, int, int] | None]:
    """The pictures of a contact sheet: ``grid: [rows, cols]`` of equal tiles, else the whole file."""
    grid = item.get("grid")
    if not grid:
        return [None]
    from PIL import Image

    rows, cols = (int(v) for v in grid)
    with Image.open(path) as img:
        width, height = img.size
    return [(c * width // cols, r * height // rows, (c + 1) * width // cols, (r + 1) * height // rows) for r in range(rows) for c in range(cols)]


def load_declarations(path: Path) -> Mapping[str, Any]:
    """The ``sources`` mapping of a declarations file."""
    try:
        sources = yaml.safe_load(path.read_text())["sources"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise PosezooError(f"{path}: cannot read calibration source declarations ({err}); fix the file") from err
    for name, decl in sources.items():
        refuse_renamed(decl, {"crop_scale": "box_scale"}, f"{path}: sources.{name}")
    return sources


def _pypi_photos(decl: Mapping[str, Any]) -> list[Photo]:
    photos = []
    for item in decl["photos"]:
        src = item["source"]
        path = fetch(src)
        origin = f"{src['kind']} {src['package']}=={src['version']}:{src['member']}"
        tiles = _tiles(item, path)
        for k, tile in enumerate(tiles):
            name = item["id"] if tile is None else f"{item['id']}[{k // int(item['grid'][1])},{k % int(item['grid'][1])}]"
            photos.append(Photo(id=name, origin=origin, path=path, sha256=src["sha256"], split=item.get("split"), tile=tile, sheet=item["id"] if tile else None))
    return photos


def _folder(decl: Mapping[str, Any], base_dir: Path) -> list[Photo]:
    root = (base_dir / decl["path"]).resolve()
    if not root.is_dir():
        raise PosezooError(f"{root}: calibration folder does not exist; create it or fix 'path' in the declaration")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise PosezooError(
            f"{root}: calibration folder has no images ({', '.join(IMAGE_SUFFIXES)}); add images or choose another source"
        )
    return [Photo(id=str(p.relative_to(root)), origin=f"folder {root}", path=p, sha256=sha256_file(p)) for p in files]


def _coco(decl: Mapping[str, Any], base_dir: Path) -> list[Photo]:
    ann_path = (base_dir / decl["annotations"]).resolve()
    img_dir = (base_dir / decl["images"]).resolve()
    try:
        coco = json.loads(ann_path.read_text())
        images, annotations = coco["images"], coco["annotations"]
    except (OSError, ValueError, KeyError) as err:
        raise PosezooError(f"{ann_path}: not a readable COCO-style JSON ({err}); pass a file with 'images' and 'annotations'") from err
    category = decl.get("category_id")
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    for ann in annotations:
        if ann.get("bbox") and (category is None or ann.get("category_id") == category):
            boxes.setdefault(ann["image_id"], []).append(tuple(float(v) for v in ann["bbox"]))
    photos = []
    for image in sorted(images, key=lambda im: im["id"]):
        if image["id"] not in boxes:
            continue
        path = img_dir / image["file_name"]
        if not path.is_file():
            raise PosezooError(f"{path}: listed in {ann_path} but missing; fix 'images' or the JSON")
        photos.append(
            Photo(id=str(image["id"]), origin=f"coco {ann_path.name}", path=path, sha256=sha256_file(path), boxes=tuple(boxes[image["id"]]))
        )
    if not photos:
        raise PosezooError(f"{ann_path}: no annotated boxes (category {category}); check the file or category_id")
    return photos


def resolve(decl: Mapping[str, Any], base_dir: Path) -> list[Photo]:
    """Fetch / list the photos of one source declaration."""
    kind = decl.get("kind")
    if kind == "pypi-photos":
        return _pypi_photos(decl)
    if kind == "folder":
        return _folder(decl, base_dir)
    if kind == "coco":
        return _coco(decl, base_dir)
    raise PosezooError(f"calibration source kind {kind!r} is not supported; use pypi-photos, folder or coco")
