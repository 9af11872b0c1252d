"""COCO-style keypoint datasets: one JSON (images, annotations with x, y, v keypoints) + an image folder.

This is the one format every evaluation set is read in (COCO itself, and the 300W / WFLW /
OneHand10K / FreiHAND conversions mmpose ships), so metrics code never sees a dataset's own
format. Problems are caught here, with the file named: a missing image, a keypoint count that
does not fit the schema, an empty set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.accuracy.schemas import Schema, load_schema, schema_for_count
from pipeline.errors import PosezooError


@dataclass(frozen=True)
class Instance:
    """One annotated person / face / hand."""

    ann_id: int
    image_id: int
    image: Path
    bbox: tuple[float, float, float, float]  # x, y, w, h in image pixels (COCO)
    keypoints: np.ndarray  # (P, 3) x, y, visibility (0 = not labelled)
    area: float


@dataclass(frozen=True)
class KeypointDataset:
    """A loaded dataset: the raw COCO dict (for pycocotools) plus the instances to evaluate."""

    name: str
    annotations: Path
    images_dir: Path
    schema: Schema
    gt: dict[str, Any]
    instances: tuple[Instance, ...]
    image_files: dict[int, Path]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise PosezooError(f"{path}: cannot read the dataset annotations ({err.strerror}); pass an existing COCO-style JSON") from err
    except ValueError as err:
        raise PosezooError(f"{path}: not valid JSON ({err}); pass a COCO-style keypoint JSON") from err
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        raise PosezooError(f"{path}: a COCO-style JSON needs 'images' and 'annotations'; this file has {sorted(data) if isinstance(data, dict) else type(data).__name__}")
    return data


def _bbox(ann: dict[str, Any], keypoints: np.ndarray) -> tuple[float, float, float, float]:
    """The annotation's box, or the labelled keypoints' extent when it has none (e.g. .pts faces)."""
    if ann.get("bbox") and len(ann["bbox"]) == 4 and ann["bbox"][2] > 0 and ann["bbox"][3] > 0:
        x, y, w, h = (float(v) for v in ann["bbox"])
        return x, y, w, h
    pts = keypoints[keypoints[:, 2] > 0, :2]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def load_dataset(annotations: Path, images_dir: Path | None = None, schema: str | None = None, name: str | None = None) -> KeypointDataset:
    """Load and check a COCO-style keypoint dataset file.

    ``images_dir`` defaults to the JSON's folder (mmpose's layout). ``schema`` defaults to the
    one whose keypoint count matches.
    """
    annotations = Path(annotations)
    images_dir = Path(images_dir) if images_dir is not None else annotations.parent
    return from_coco(_read_json(annotations), images_dir, annotations, schema, name or annotations.stem)


def from_coco(gt: dict[str, Any], images_dir: Path, annotations: Path, schema: str | None, name: str) -> KeypointDataset:
    """Check an in-memory COCO-style dict (``annotations`` names its origin in messages).

    Crowd annotations and instances without a labelled keypoint are skipped for the
    per-instance evaluation, as COCO's own evaluation ignores them; they stay in ``gt`` for
    pycocotools. Instances are ordered by image, then annotation id.
    """
    image_files = {int(im["id"]): images_dir / im["file_name"] for im in gt["images"]}
    counts = {len(a.get("keypoints", [])) // 3 for a in gt["annotations"]}
    if not gt["annotations"] or counts == {0}:
        raise PosezooError(f"{annotations}: no keypoint annotations; pass a COCO-style keypoint JSON")
    if len(counts) != 1:
        raise PosezooError(f"{annotations}: annotations have different keypoint counts {sorted(counts)}; split the file by schema")
    (count,) = counts
    chosen = load_schema(schema) if schema else schema_for_count(count)
    if chosen.count != count:
        raise PosezooError(f"{annotations}: {count} keypoints per annotation but schema '{chosen.name}' has {chosen.count}; pick the matching schema")
    instances = []
    for ann in sorted(gt["annotations"], key=lambda a: (int(a["image_id"]), int(a["id"]))):
        keypoints = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        if ann.get("iscrowd", 0) or not (keypoints[:, 2] > 0).any():
            continue
        image_id = int(ann["image_id"])
        if image_id not in image_files:
            raise PosezooError(f"{annotations}: annotation {ann['id']} names image {image_id}, which 'images' does not list; fix the JSON")
        if not image_files[image_id].is_file():
            raise PosezooError(f"{image_files[image_id]}: listed in {annotations} but missing; pass the right image folder")
        box = _bbox(ann, keypoints)
        area = float(ann.get("area") or box[2] * box[3])
        instances.append(Instance(int(ann["id"]), image_id, image_files[image_id], box, keypoints, area))
    if not instances:
        raise PosezooError(f"{annotations}: every annotation is a crowd region or has no labelled keypoint; nothing to evaluate")
    # pycocotools needs these fields; converted sets (e.g. from .pts files) may lack them.
    gt.setdefault("categories", [{"id": 1, "name": chosen.task}])
    by_id = {inst.ann_id: inst for inst in instances}
    for ann in gt["annotations"]:
        inst = by_id.get(int(ann["id"]))
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", inst.area if inst else 0.0)
        if inst and not ann.get("bbox"):
            ann["bbox"] = list(inst.bbox)
    return KeypointDataset(name, annotations, images_dir, chosen, gt, tuple(instances), image_files)
