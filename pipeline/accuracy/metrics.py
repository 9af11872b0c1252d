"""Keypoint accuracy metrics against ground truth: COCO AP / OKS, NME, PCK and EPE.

Pure functions on arrays and COCO-style dicts, composed by the caller. COCO keypoint AP is
pycocotools' own ``COCOeval`` (the reference implementation every published COCO figure comes
from), not a re-implementation. The landmark metrics follow mmpose's definitions (the
implementation behind the 300W / WFLW / OneHand10K figures most papers quote):

- NME: per instance, the mean over labelled points of ‖pred − gt‖ / norm (norm = inter-ocular
  distance for 300W / WFLW).
- PCK: the fraction of labelled points with ‖pred − gt‖ < threshold · size (size = max(w, h) of
  the instance's box), pooled over all points.
- EPE: the mean ‖pred − gt‖ in pixels over all labelled points.

Array conventions: ``pred`` and ``gt`` are (N, K, 2) x, y in image pixels, ``visible`` is (N, K)
(True / > 0 where the point is labelled), per-instance norms and sizes are (N,).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from typing import Any, Sequence

import numpy as np

from pipeline.accuracy.schemas import Schema
from pipeline.errors import PosezooError

log = logging.getLogger(__name__)

#: The first eight of ``COCOeval.stats`` for keypoints, in pycocotools' order.
COCO_STATS = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75")


def _coco_gt(gt: dict[str, Any], count: int) -> dict[str, Any]:
    """A private copy of ``gt`` with the fields COCOeval reads filled in where a converted set lacks them.

    COCOeval writes into the annotation dicts (``ignore``), so the caller's dict is never handed
    over. ``num_keypoints`` (COCOeval ignores instances with 0) defaults to the number of labelled
    points, ``iscrowd`` to 0.
    """
    gt = copy.deepcopy(gt)
    for ann in gt["annotations"]:
        keypoints = ann.get("keypoints", [])
        if len(keypoints) != 3 * count:
            raise PosezooError(
                f"annotation {ann.get('id')} has {len(keypoints) // 3} keypoints but {count} sigmas were given; use the dataset's schema"
            )
        ann.setdefault("num_keypoints", int(np.count_nonzero(np.asarray(keypoints[2::3]) > 0)))
        ann.setdefault("iscrowd", 0)
    return gt


def coco_keypoint_ap(gt: dict[str, Any], detections: list[dict[str, Any]], sigmas: Sequence[float]) -> dict[str, float]:
    """COCO keypoint AP / AR of ``detections`` on the COCO-style ``gt`` dict, by pycocotools' COCOeval.

    ``detections`` are COCO result records (``image_id``, ``category_id``, ``keypoints`` as flat
    x, y, v, ``score``); extra keys are ignored. ``sigmas`` (one per keypoint) replace COCOeval's
    built-in COCO-17 values, so other layouts with published sigmas work too. Returns AP, AP50,
    AP75, AP_medium, AP_large, AR, AR50, AR75 in [0, 1]; a figure pycocotools cannot compute
    (it reports -1, e.g. AP_medium when no ground-truth instance is medium-sized) is NaN.
    pycocotools' progress printing is silenced; one summary line is logged instead.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        raise PosezooError("no detections to evaluate; COCO AP needs at least one predicted instance")
    bad = [i for i, d in enumerate(detections) if len(d["keypoints"]) != 3 * len(sigmas)]
    if bad:
        raise PosezooError(f"detections {bad[:5]} do not hold {len(sigmas)} x, y, v triplets; send every schema keypoint (0, 0, 0 if unpredicted)")
    known = {int(im["id"]) for im in gt["images"]}
    unknown = sorted({int(d["image_id"]) for d in detections} - known)
    if unknown:
        raise PosezooError(f"detections name image ids {unknown[:5]} that the ground truth does not list; pair them with the right dataset")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = _coco_gt(gt, len(sigmas))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))  # loadRes adds id / area / bbox in place
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    result = {name: float(v) if v >= 0 else float("nan") for name, v in zip(COCO_STATS, evaluator.stats)}
    log.info("COCO keypoints: AP %.3f, AP50 %.3f, AR %.3f (%d detections, %d images)",
             result["AP"], result["AP50"], result["AR"], len(detections), len(known))
    return result


def instance_oks(gt: dict[str, Any], detections: list[dict[str, Any]], sigmas: Sequence[float]) -> np.ndarray:
    """OKS of each detection with the ground-truth instance it was made from (top-down evaluation).

    Every detection names its instance by ``ann_id`` (the annotation ``id`` whose box made the
    crop); the result has one OKS per detection, in order. The formula is COCOeval.computeOks':
    mean over the instance's labelled keypoints (v > 0) of exp(−d² / (2 · s² · (2σ)²)), with
    s² = the annotation's ``area`` field, as COCO takes it (the segment area, not the box).

    It is written out here rather than called through ``COCOeval.computeOks`` because that
    method scores every detection against every instance of an image, only after the private
    ``_prepare`` step, over detections re-sorted by score and cut at ``maxDets``; recovering "the
    one pair this crop was made for" from it would depend on those internals. The unit tests
    check this function against ``computeOks`` on the same data.
    """
    sig = np.asarray(sigmas, dtype=np.float64)
    by_id = {int(a["id"]): a for a in gt["annotations"]}
    out = np.empty(len(detections), dtype=np.float64)
    for i, det in enumerate(detections):
        if "ann_id" not in det or int(det["ann_id"]) not in by_id:
            raise PosezooError(f"detection {i} has no ann_id of a ground-truth annotation; top-down OKS needs the instance each crop came from")
        ann = by_id[int(det["ann_id"])]
        g = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        d = np.asarray(det["keypoints"], dtype=np.float64).reshape(-1, 3)
        if g.shape[0] != sig.size or d.shape[0] != sig.size:
            raise PosezooError(f"annotation {ann['id']}: {g.shape[0]} keypoints, detection {d.shape[0]}, sigmas {sig.size}; they must agree")
        labelled = g[:, 2] > 0
        if float(ann.get("area") or 0) <= 0:
            raise PosezooError(f"annotation {ann['id']} has no positive 'area'; OKS scales by it (COCO: the segment area)")
        if not labelled.any():
            raise PosezooError(f"annotation {ann['id']} has no labelled keypoint, so OKS is undefined; evaluate labelled instances only")
        e = ((d[:, :2] - g[:, :2]) ** 2).sum(axis=1) / ((2 * sig) ** 2) / (float(ann["area"]) + np.spacing(1)) / 2
        out[i] = np.exp(-e[labelled]).mean()
    return out


def _distances(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) point distances and the (N, K) boolean mask of labelled points, shapes checked."""
    pred, gt, mask = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64), np.asarray(visible) > 0
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2 or mask.shape != pred.shape[:2]:
        raise ValueError(f"expected pred, gt (N, K, 2) and visible (N, K); got {pred.shape}, {gt.shape}, {mask.shape}")
    return np.linalg.norm(pred - gt, axis=-1), mask


def nme(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """(N,) normalised mean error per instance: mean over its labelled points of ‖pred − gt‖ / norm.

    An instance with no labelled point has no error to average and gets NaN (use np.nanmean
    over instances); a non-positive norm is a degenerate annotation and raises.
    """
    dist, mask = _distances(pred, gt, visible)
    norm = np.asarray(norm, dtype=np.float64).reshape(-1)
    if norm.shape != (dist.shape[0],) or (norm <= 0).any():
        raise PosezooError(f"NME needs one positive normaliser per instance; got {norm.tolist()[:5]} for {dist.shape[0]} instances")
    counts = mask.sum(axis=1)
    sums = np.where(mask, dist, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan) / norm


def interocular_distance(keypoints: np.ndarray, schema: Schema) -> np.ndarray:
    """(N,) distance between the schema's two outer eye corners in (N, P, ≥2) ground-truth keypoints."""
    if schema.interocular is None:
        raise PosezooError(f"schema '{schema.name}' defines no inter-ocular pair; NME by inter-ocular distance needs a face schema")
    left, right = schema.interocular
    kp = np.asarray(keypoints, dtype=np.float64)
    return np.linalg.norm(kp[:, left, :2] - kp[:, right, :2], axis=-1)


def bbox_size(bboxes: np.ndarray) -> np.ndarray:
    """(N,) max(width, height) of (N, 4) COCO x, y, w, h boxes: the PCK size of mmpose's ``norm_item='bbox'``."""
    boxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    return boxes[:, 2:].max(axis=1)


def pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, size: np.ndarray, threshold: float = 0.2) -> float:
    """Fraction of labelled points within ``threshold`` · size of their ground truth (strictly less, as mmpose).

    ``size`` is one length per instance (e.g. :func:`bbox_size`). Points are pooled over all
    instances, each labelled point counting once.
    """
    dist, mask = _distances(pred, gt, visible)
    size = np.asarray(size, dtype=np.float64).reshape(-1)
    if size.shape != (dist.shape[0],) or (size <= 0).any():
        raise PosezooError(f"PCK needs one positive size per instance; got {size.tolist()[:5]} for {dist.shape[0]} instances")
    if not mask.any():
        raise PosezooError("no labelled keypoint to score; PCK is undefined")
    return float((dist < threshold * size[:, None])[mask].mean())


def epe(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> float:
    """Mean end-point error in pixels over all labelled points (pooled over instances)."""
    dist, mask = _distances(pred, gt, visible)
    if not mask.any():
        raise PosezooError("no labelled keypoint to score; EPE is undefined")
    return float(dist[mask].mean())
