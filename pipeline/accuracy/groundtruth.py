"""Ground-truth accuracy of one model file on one keypoint dataset.

Which metrics apply is data: the registry's ``accuracy`` block names the task (body, face or
hand), ``box_scale`` (box enlargement) for top-down box framing, and, per dataset schema, which model keypoint
stands for which dataset keypoint. The metric functions themselves are
:mod:`pipeline.accuracy.metrics` (pycocotools for everything COCO defines).

- body, single person (MoveNet, BlazePose): top-down on each annotated person; COCO keypoint
  AP/AR with pycocotools over those predictions (score = mean keypoint confidence) and the mean
  OKS per instance, the figure ST's MoveNet card publishes. Area = the annotation's ``area``
  field, as COCO's own evaluation takes it.
- body, multi person (YOLOv8-pose): the whole image, letterboxed; COCO keypoint AP/AR.
- face: NME over the landmarks the model and the dataset share, normalised by the ground-truth
  inter-ocular (outer eye corner) distance.
- hand: PCK@0.2 of the box size (max of width, height) and mean end-point error in pixels.

Single-instance models see each instance as :mod:`pipeline.accuracy.topdown` frames it: the
deployment ROI derived from its ground truth (protocol ``roi``) or the upright box crop
(``box``); the figures say which protocol produced them and how many instances fell back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np
from tqdm import tqdm

from pipeline.accuracy import metrics
from pipeline.accuracy.dataset import Instance, KeypointDataset
from pipeline.accuracy.topdown import PROTOCOLS, crop_pixels, frame_instance, whole_image
from pipeline.calibration.images import load_rgb, to_tensor
from pipeline.convert.runners import Runner
from pipeline.errors import PosezooError
from pipeline.evaluate.decoders import decoder_for, is_multi_instance
from pipeline.registry import ModelSpec
from pipeline.roi.conventions import roi_spec

TASKS = ("body", "face", "hand")
PCK_THRESHOLD = 0.2


@dataclass(frozen=True)
class AccuracySpec:
    """The registry's ``accuracy`` block of one model."""

    task: str
    box_scale: float
    maps: Mapping[str, Mapping[int, int]]  # schema name → {dataset keypoint index: model keypoint index}
    decoder: Mapping[str, Any]  # decoder settings that differ when scoring, e.g. COCO mAP's low score threshold


def accuracy_spec(spec: ModelSpec) -> AccuracySpec:
    """Read and check ``accuracy`` of a registry entry; a missing or malformed block names the file."""
    block = spec.raw.get("accuracy")
    if not isinstance(block, Mapping):
        raise PosezooError(f"{spec.path}: no 'accuracy' block (task, box_scale, maps); add one to measure ground-truth accuracy")
    task = block.get("task")
    if task not in TASKS:
        raise PosezooError(f"{spec.path}: accuracy.task is {task!r}; use one of {', '.join(TASKS)}")
    maps = {name: {int(d): int(m) for d, m in table.items()} for name, table in (block.get("maps") or {}).items()}
    for name, table in maps.items():
        bad = [m for m in table.values() if not 0 <= m < spec.keypoint_count]
        if bad:
            raise PosezooError(f"{spec.path}: accuracy.maps.{name} names model keypoints {bad} outside 0..{spec.keypoint_count - 1}; fix the table")
    return AccuracySpec(task, float(block.get("box_scale", 1.0)), maps, dict(block.get("decoder") or {}))


def applicable(spec: ModelSpec, dataset: KeypointDataset) -> bool:
    """True when the model has a keypoint map onto the dataset's schema."""
    return dataset.schema.name in accuracy_spec(spec).maps


@dataclass(frozen=True)
class Prediction:
    """Model keypoints of one crop or image, mapped back to image pixels."""

    image_id: int
    ann_id: int | None  # the annotation whose box made the crop (top-down), None for whole images
    keypoints: np.ndarray  # (N, K, 2)
    scores: np.ndarray  # (N, K)
    instance_scores: np.ndarray  # (N,)
    protocol: str = "box"  # how the instance was framed (see pipeline.accuracy.topdown)


def _infer(run: Runner, spec: ModelSpec, pixels: np.ndarray, back: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    poses = decoder_for(spec)(run(to_tensor(pixels, spec.input, "NHWC")), spec)
    return back(poses.keypoints), poses.scores, poses.instance_scores


def predict(spec: ModelSpec, run: Runner, dataset: KeypointDataset, desc: str = "", protocol: str = "roi") -> list[Prediction]:
    """Run ``run`` on every instance, framed by ``protocol`` (or on every whole image for multi-person models)."""
    if protocol not in PROTOCOLS:
        raise PosezooError(f"accuracy.crop is {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    acc = accuracy_spec(spec)
    spec = replace(spec, decoder={**spec.decoder, **acc.decoder})
    out = []
    if is_multi_instance(spec):
        images = sorted({inst.image_id for inst in dataset.instances})
        for image_id in tqdm(images, desc=desc, leave=False):
            img = load_rgb(dataset.image_files[image_id])
            crop = whole_image(*img.size)
            back = lambda xy, crop=crop: crop.to_image(xy, spec.input)  # noqa: E731
            out.append(Prediction(image_id, None, *_infer(run, spec, crop_pixels(img, crop, spec.input), back), protocol="whole_image"))
        return out
    convention = roi_spec(spec) if protocol == "roi" else None
    table = acc.maps.get(dataset.schema.name)
    img, img_id = None, None  # instances come sorted by image: decode each image once
    for inst in tqdm(dataset.instances, desc=desc, leave=False):
        if inst.image_id != img_id:
            img, img_id = load_rgb(inst.image), inst.image_id
        framing = frame_instance(img, inst.bbox, inst.keypoints, spec.input, acc.box_scale, table, spec.keypoint_count, convention)
        out.append(Prediction(inst.image_id, inst.ann_id, *_infer(run, spec, framing.pixels, framing.to_image), protocol=framing.protocol))
    return out


def protocol_counts(preds: list[Prediction]) -> dict[str, int]:
    """How many instances each framing protocol produced (``roi``, ``roi-upright``, ``box``, ``whole_image``)."""
    return dict(sorted(Counter(p.protocol for p in preds).items()))


def _mapped(table: Mapping[int, int]) -> tuple[np.ndarray, np.ndarray]:
    dataset_idx = np.array(sorted(table), dtype=int)
    return dataset_idx, np.array([table[d] for d in dataset_idx], dtype=int)


def _coco_detections(dataset: KeypointDataset, table: Mapping[int, int], preds: list[Prediction]) -> list[dict[str, Any]]:
    """COCO result records; dataset keypoints the model does not predict are sent as (0, 0, 0)."""
    category = int(dataset.gt["categories"][0]["id"])
    d_idx, m_idx = _mapped(table)
    records = []
    for p in preds:
        for n in range(p.keypoints.shape[0]):
            flat = np.zeros((dataset.schema.count, 3))
            flat[d_idx, :2] = p.keypoints[n, m_idx]
            flat[d_idx, 2] = p.scores[n, m_idx]
            record = {
                "image_id": p.image_id,
                "category_id": category,
                "keypoints": [float(v) for v in flat.ravel()],
                "score": float(p.instance_scores[n] * p.scores[n, m_idx].mean()),
            }
            if p.ann_id is not None:
                record["ann_id"] = p.ann_id
            records.append(record)
    return records


def _gt_arrays(instances: tuple[Instance, ...], d_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt = np.stack([inst.keypoints[d_idx, :2] for inst in instances])
    visible = np.stack([inst.keypoints[d_idx, 2] > 0 for inst in instances])
    return gt, visible


def score(spec: ModelSpec, dataset: KeypointDataset, preds: list[Prediction]) -> dict[str, float]:
    """The task's metrics for predictions made by :func:`predict`."""
    acc = accuracy_spec(spec)
    table = acc.maps[dataset.schema.name]
    if acc.task == "body":
        detections = _coco_detections(dataset, table, preds)
        result = {f"coco_{k}": v for k, v in metrics.coco_keypoint_ap(dataset.gt, detections, dataset.schema.sigmas).items()}
        if not is_multi_instance(spec):
            result["mean_oks"] = float(np.mean(metrics.instance_oks(dataset.gt, detections, dataset.schema.sigmas)))
        return result
    d_idx, m_idx = _mapped(table)
    pred = np.stack([p.keypoints[0, m_idx] for p in preds])
    gt, visible = _gt_arrays(dataset.instances, d_idx)
    if acc.task == "face":
        norm = metrics.interocular_distance(np.stack([inst.keypoints for inst in dataset.instances]), dataset.schema)
        per_instance = metrics.nme(pred, gt, visible, norm)  # NaN for a face with no labelled shared landmark
        return {"nme_interocular": float(np.nanmean(per_instance)), "nme_interocular_max": float(np.nanmax(per_instance)), "landmarks_compared": int(len(d_idx))}
    size = metrics.bbox_size(np.array([inst.bbox for inst in dataset.instances]))
    return {"pck_0.2": float(metrics.pck(pred, gt, visible, size, PCK_THRESHOLD)), "epe_px": float(metrics.epe(pred, gt, visible))}


def evaluate(spec: ModelSpec, run: Runner, dataset: KeypointDataset, desc: str = "", protocol: str = "roi") -> dict[str, Any]:
    """Predict and score in one call; the metrics carry the instance count and framing they stand on."""
    preds = predict(spec, run, dataset, desc, protocol)
    return {"instances": len(dataset.instances), "framing": protocol_counts(preds), **score(spec, dataset, preds)}


def _defined(figures: dict[str, Any]) -> dict[str, Any]:
    """NaN (pycocotools' "no instance of this size", -1 in its stats) → None: JSON has no NaN."""
    return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in figures.items()}


def compare(spec: ModelSpec, reference: Runner, candidate: Runner, dataset: KeypointDataset, names: tuple[str, str], protocol: str = "roi") -> dict[str, Any]:
    """Float and int8 figures on one dataset, and int8 − float for every figure both have.

    ``protocol`` is the one asked for; ``framing`` (inside the float / int8 figures) counts how
    instances were really framed, e.g. all ``box`` for a model without an ROI convention.
    """
    ref = _defined(evaluate(spec, reference, dataset, f"{dataset.name} {names[0]}", protocol))
    got = _defined(evaluate(spec, candidate, dataset, f"{dataset.name} {names[1]}", protocol))
    delta = {k: got[k] - ref[k] for k in ref if k != "instances" and isinstance(ref[k], float) and isinstance(got[k], float)}
    return {"schema": dataset.schema.name, "task": accuracy_spec(spec).task, "protocol": protocol, "float": ref, "int8": got, "delta": delta}

