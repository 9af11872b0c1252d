"""COCO-style keypoint datasets: one JSON (images, annotations with x, y, v keypoints) + an image folder.

This is the one format every evaluation set is read in (COCO itself, and the 300W / WFLW /
OneHand10K / FreiHAND / RHD conversions mmpose ships), so metrics code never sees a dataset's own
format. Problems are caught here, with the file named: a missing image, a keypoint count that
does not fit the schema, an empty set.

Keypoints are read as a flat ``[x, y, v, ...]`` list (COCO) or as rows ``[[x, y, v], ...]`` (mmpose's
RHD file) or ``[[x, y], ...]`` (no visibility: every point counts as labelled, v = 2). COCO-WholeBody
annotations carry the hands, face and feet in fields of their own (``lefthand_kpts`` … with a
``*_valid`` flag and a ``*_box``); ``keypoints_field`` picks the one read (:data:`KEYPOINT_FIELDS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from pipeline.accuracy.schemas import Schema, load_schema, schema_for_count
from pipeline.errors import PosezooError

#: COCO-WholeBody part fields: (the flag saying the part is annotated, the part's box field).
WHOLEBODY_PARTS = {
    "lefthand_kpts": ("lefthand_valid", "lefthand_box"),
    "righthand_kpts": ("righthand_valid", "righthand_box"),
    "face_kpts": ("face_valid", "face_box"),
    "foot_kpts": ("foot_valid", None),
}
#: ``keypoints_field`` choices: plain COCO ``keypoints``, one WholeBody part, or ``hands`` (both
#: hand fields, each hand its own instance, ids ``2 * id`` (left) and ``2 * id + 1`` (right)).
KEYPOINT_FIELDS = ("keypoints", *WHOLEBODY_PARTS, "hands")
_READS = {"hands": ("lefthand_kpts", "righthand_kpts")}


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


@dataclass(frozen=True)
class _Part:
    """The keypoints one annotation holds in the field read, before the schema is known."""

    ann_id: int  # the instance id (derived for ``hands``)
    ann: dict[str, Any]
    keypoints: np.ndarray  # (P, 3)
    box: Any  # the box field's value (may be absent or degenerate)
    area: float | None  # the annotation's own area (plain keypoints only: a part's is its box)
    labelled: bool  # not a crowd region, not flagged invalid, some point labelled


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


def _bbox(box: Any, keypoints: np.ndarray) -> tuple[float, float, float, float]:
    """``box`` (x, y, w, h), or the labelled keypoints' extent when it is absent or empty (e.g. .pts faces)."""
    if box and len(box) == 4 and box[2] > 0 and box[3] > 0:
        x, y, w, h = (float(v) for v in box)
        return x, y, w, h
    pts = keypoints[keypoints[:, 2] > 0, :2]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def keypoint_rows(values: Sequence[Any], where: str) -> np.ndarray:
    """(P, 3) x, y, v of a flat x, y, v list or of [x, y, v] / [x, y] rows (v = 2 when absent)."""
    try:
        nested = len(values) > 0 and isinstance(values[0], (list, tuple))
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise PosezooError(f"{where}: keypoints are neither a flat x, y, v list nor [x, y(, v)] rows ({err}); fix the JSON") from err
    if nested:
        if array.ndim != 2 or array.shape[1] not in (2, 3):
            raise PosezooError(f"{where}: keypoint rows must all be [x, y, v] or all [x, y], got shape {list(array.shape)}; fix the JSON")
        return array if array.shape[1] == 3 else np.concatenate([array, np.full((len(array), 1), 2.0)], axis=1)
    if array.ndim != 1 or array.size % 3:
        raise PosezooError(f"{where}: {array.size} keypoint values, not a flat x, y, v list (a multiple of 3); fix the JSON")
    return array.reshape(-1, 3)


def _available(anns: list[dict[str, Any]]) -> list[str]:
    """The ``keypoints_field`` choices some annotation carries (``hands``: both hand fields)."""
    present = set().union(*(a.keys() for a in anns))
    return [f for f in KEYPOINT_FIELDS if set(_READS.get(f, (f,))) <= present]


def _parts(anns: list[dict[str, Any]], field: str, annotations: Path) -> Iterator[_Part]:
    """Every annotation's keypoints in ``field``; plain ``keypoints`` may be missing (no points)."""
    reads = _READS.get(field, (field,))
    for ann in anns:
        for side, name in enumerate(reads):
            if name != "keypoints" and name not in ann:
                continue
            ann_id = int(ann["id"]) * len(reads) + side
            keypoints = keypoint_rows(ann.get(name, []), f"{annotations}: annotation {ann['id']}")
            valid, box = WHOLEBODY_PARTS.get(name, ("", "bbox"))
            labelled = not ann.get("iscrowd", 0) and bool(ann.get(valid, True)) and bool((keypoints[:, 2] > 0).any())
            yield _Part(ann_id, ann, keypoints, ann.get(box) if box else None, ann.get("area") if name == "keypoints" else None, labelled)


def load_dataset(
    annotations: Path, images_dir: Path | None = None, schema: str | None = None, name: str | None = None, keypoints_field: str = "keypoints"
) -> KeypointDataset:
    """Load and check a COCO-style keypoint dataset file.

    ``images_dir`` defaults to the JSON's folder (mmpose's layout). ``schema`` defaults to the
    one whose keypoint count matches. ``keypoints_field`` is one of :data:`KEYPOINT_FIELDS`.
    """
    annotations = Path(annotations)
    images_dir = Path(images_dir) if images_dir is not None else annotations.parent
    return from_coco(_read_json(annotations), images_dir, annotations, schema, name or annotations.stem, keypoints_field)


def from_coco(
    gt: dict[str, Any], images_dir: Path, annotations: Path, schema: str | None, name: str, keypoints_field: str = "keypoints"
) -> KeypointDataset:
    """Check an in-memory COCO-style dict (``annotations`` names its origin in messages).

    Crowd annotations and instances without a labelled keypoint are skipped for the
    per-instance evaluation, as COCO's own evaluation ignores them; they stay in ``gt`` for
    pycocotools. Instances are ordered by image, then annotation id. A WholeBody part
    (``keypoints_field`` other than ``keypoints``) gets a ``gt`` of its own: one annotation per
    instance, keypoints flat, box = the part's box or its labelled keypoints' extent.
    """
    if keypoints_field not in KEYPOINT_FIELDS:
        raise PosezooError(f"{annotations}: keypoints_field {keypoints_field!r} is unknown; use one of {', '.join(KEYPOINT_FIELDS)}")
    available = _available(gt["annotations"])
    if keypoints_field != "keypoints" and keypoints_field not in available:
        raise PosezooError(
            f"{annotations}: no annotation has {' and '.join(_READS.get(keypoints_field, (keypoints_field,)))} (keypoints_field {keypoints_field}); "
            f"the annotations have: {', '.join(available) or 'no keypoint field'}"
        )
    wholebody = [f for f in available if f != "keypoints"]
    hint = f"; these are COCO-WholeBody annotations: pick a part with keypoints_field ({', '.join(wholebody)})" if wholebody and keypoints_field == "keypoints" else ""
    image_files = {int(im["id"]): images_dir / im["file_name"] for im in gt["images"]}
    parts = list(_parts(gt["annotations"], keypoints_field, annotations))
    counts = {len(p.keypoints) for p in parts}
    if not parts or counts == {0}:
        raise PosezooError(f"{annotations}: no keypoint annotations; pass a COCO-style keypoint JSON{hint}")
    if len(counts) != 1:
        raise PosezooError(f"{annotations}: annotations have different keypoint counts {sorted(counts)}; split the file by schema")
    (count,) = counts
    chosen = load_schema(schema) if schema else schema_for_count(count, str(annotations), hint)
    if chosen.count != count:
        raise PosezooError(f"{annotations}: {count} keypoints per annotation but schema '{chosen.name}' has {chosen.count}; pick the matching schema")
    instances = []
    for part in sorted(parts, key=lambda p: (int(p.ann["image_id"]), p.ann_id)):
        if not part.labelled:
            continue
        image_id = int(part.ann["image_id"])
        if image_id not in image_files:
            raise PosezooError(f"{annotations}: annotation {part.ann['id']} names image {image_id}, which 'images' does not list; fix the JSON")
        if not image_files[image_id].is_file():
            raise PosezooError(f"{image_files[image_id]}: listed in {annotations} but missing; pass the right image folder")
        box = _bbox(part.box, part.keypoints)
        area = float(part.area or box[2] * box[3])
        instances.append(Instance(part.ann_id, image_id, image_files[image_id], box, part.keypoints, area))
    if not instances:
        raise PosezooError(f"{annotations}: every annotation is a crowd region or has no labelled keypoint; nothing to evaluate")
    if keypoints_field == "keypoints":
        _complete(gt, chosen, instances)
    else:
        gt = _part_gt(gt, chosen, instances)
    return KeypointDataset(name, annotations, images_dir, chosen, gt, tuple(instances), image_files)


def _complete(gt: dict[str, Any], schema: Schema, instances: list[Instance]) -> None:
    """Add the fields pycocotools needs, which converted sets (e.g. from .pts files) may lack."""
    gt.setdefault("categories", [{"id": 1, "name": schema.task}])
    by_id = {inst.ann_id: inst for inst in instances}
    for ann in gt["annotations"]:
        inst = by_id.get(int(ann["id"]))
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", inst.area if inst else 0.0)
        if inst and not ann.get("bbox"):
            ann["bbox"] = list(inst.bbox)


def _part_gt(gt: dict[str, Any], schema: Schema, instances: list[Instance]) -> dict[str, Any]:
    """A COCO dict whose annotations are the instances (one per WholeBody part read)."""
    annotations = [
        {
            "id": inst.ann_id,
            "image_id": inst.image_id,
            "category_id": 1,
            "keypoints": [float(v) for v in inst.keypoints.ravel()],
            "num_keypoints": int((inst.keypoints[:, 2] > 0).sum()),
            "bbox": list(inst.bbox),
            "area": inst.area,
            "iscrowd": 0,
        }
        for inst in instances
    ]
    return {"images": gt["images"], "annotations": annotations, "categories": [{"id": 1, "name": schema.task}]}
