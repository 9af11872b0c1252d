"""Accuracy metrics on tiny hand-made annotations with hand-computed expected values, and the schemas."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from pipeline.accuracy import metrics
from pipeline.accuracy.schemas import load_schema, schema_for_count, schema_names
from pipeline.errors import PosezooError

COCO_SIGMAS = load_schema("coco17").sigmas


def _gt(instances: list[tuple[int, int, list[float], float]], count: int = 17) -> dict:
    """COCO-style dict from (image_id, ann_id, flat keypoints, area) tuples; box = the points' extent."""
    anns = []
    for image_id, ann_id, kps, area in instances:
        k = np.asarray(kps, dtype=float).reshape(count, 3)
        lab = k[k[:, 2] > 0, :2]
        x0, y0 = lab.min(axis=0)
        x1, y1 = lab.max(axis=0)
        anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": list(map(float, kps)),
                     "num_keypoints": int((k[:, 2] > 0).sum()), "area": area, "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
    images = sorted({a["image_id"] for a in anns})
    return {"images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in images],
            "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def _person(rng: np.random.Generator, x: float, y: float, scale: float, hidden: int | None = None) -> list[float]:
    pts = np.column_stack([x + rng.uniform(0, scale, 17), y + rng.uniform(0, 2 * scale, 17), np.full(17, 2.0)])
    if hidden is not None:
        pts[hidden] = 0.0
    return pts.ravel().tolist()


def _perfect(gt: dict) -> list[dict]:
    """One detection per instance, exactly on the ground truth (score 1, v = 1)."""
    dets = []
    for a in gt["annotations"]:
        k = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
        k[:, 2] = 1.0
        dets.append({"image_id": a["image_id"], "category_id": 1, "keypoints": k.ravel().tolist(), "score": 1.0, "ann_id": a["id"]})
    return dets


@pytest.fixture()
def crowd_gt() -> dict:
    rng = np.random.default_rng(0)
    people = [(1, 11, _person(rng, 10, 10, 150), 150 * 300.0), (1, 12, _person(rng, 300, 20, 120, hidden=3), 120 * 240.0),
              (2, 21, _person(rng, 50, 40, 200), 200 * 400.0)]
    return _gt(people)


# --- OKS ------------------------------------------------------------------------------------


def test_oks_of_one_instance_matches_the_hand_computed_value() -> None:
    # 4 keypoints, σ = 0.05 each, area s² = 100, so 2·s²·(2σ)² = 2·100·0.01 = 2 and a point d px
    # off scores exp(−d²/2). Point 0 exact: d² = 0 → 1. Point 1 off by (1, 1): d² = 2 → e⁻¹ =
    # 0.367879. Point 2 unlabelled (v = 0): ignored although 50 px off. Point 3 (v = 1 still counts)
    # off by (2, 0): d² = 4 → e⁻² = 0.135335. OKS = (1 + 0.367879 + 0.135335) / 3 = 0.501071.
    gt_kps = [10, 10, 2, 20, 20, 2, 30, 30, 0, 40, 40, 1]
    gt = _gt([(1, 7, gt_kps, 100.0)], count=4)
    det = {"image_id": 1, "category_id": 1, "ann_id": 7, "score": 1.0, "keypoints": [10, 10, 1, 21, 21, 1, 80, 80, 1, 42, 40, 1]}
    (oks,) = metrics.instance_oks(gt, [det], [0.05] * 4)
    assert oks == pytest.approx((1 + math.exp(-1) + math.exp(-2)) / 3, abs=1e-9)
    assert oks == pytest.approx(0.501071, abs=1e-6)


def test_instance_oks_agrees_with_pycocotools_compute_oks(crowd_gt: dict) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(1)
    dets = _perfect(crowd_gt)
    for i, d in enumerate(dets):
        k = np.asarray(d["keypoints"]).reshape(-1, 3)
        k[:, :2] += rng.normal(0, 6, (17, 2))
        d["keypoints"], d["score"] = k.ravel().tolist(), 0.9 - 0.1 * i
    ours = metrics.instance_oks(crowd_gt, dets, COCO_SIGMAS)

    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(crowd_gt)
    coco_gt.createIndex()
    ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iouType="keypoints")
    ev.params.kpt_oks_sigmas = np.asarray(COCO_SIGMAS)
    ev.evaluate()
    for i, d in enumerate(dets):
        same_image = [j for j, e in enumerate(dets) if e["image_id"] == d["image_id"]]
        row = sorted(same_image, key=lambda j: -dets[j]["score"]).index(i)  # computeOks sorts by score
        col = [a["id"] for a in crowd_gt["annotations"] if a["image_id"] == d["image_id"]].index(d["ann_id"])
        assert ours[i] == pytest.approx(ev.ious[(d["image_id"], 1)][row, col], abs=1e-12)
    assert ((0 < ours) & (ours < 1)).all()


def test_instance_oks_needs_the_instance_of_each_detection(crowd_gt: dict) -> None:
    det = _perfect(crowd_gt)[0]
    del det["ann_id"]
    with pytest.raises(PosezooError, match="ann_id"):
        metrics.instance_oks(crowd_gt, [det], COCO_SIGMAS)


# --- COCO AP --------------------------------------------------------------------------------


def test_perfect_predictions_score_ap_one_and_undefined_areas_are_nan(crowd_gt: dict) -> None:
    before = copy.deepcopy(crowd_gt)
    result = metrics.coco_keypoint_ap(crowd_gt, _perfect(crowd_gt), COCO_SIGMAS)
    assert set(result) == set(metrics.COCO_STATS)
    for key in ("AP", "AP50", "AP75", "AP_large", "AR", "AR50", "AR75"):
        assert result[key] == pytest.approx(1.0), key
    assert math.isnan(result["AP_medium"])  # every person here is large: pycocotools reports -1
    assert crowd_gt == before  # COCOeval worked on a copy


def test_a_shifted_prediction_lowers_ap(crowd_gt: dict) -> None:
    dets = _perfect(crowd_gt)
    k = np.asarray(dets[0]["keypoints"]).reshape(-1, 3)
    k[:, 0] += 40.0  # 40 px on a 150 x 300 person: OKS far below 0.5
    dets[0]["keypoints"] = k.ravel().tolist()
    shifted = metrics.coco_keypoint_ap(crowd_gt, dets, COCO_SIGMAS)
    assert metrics.instance_oks(crowd_gt, dets[:1], COCO_SIGMAS)[0] < 0.5
    assert shifted["AP"] < 0.9 and shifted["AR"] < 1.0
    assert shifted["AP"] < metrics.coco_keypoint_ap(crowd_gt, _perfect(crowd_gt), COCO_SIGMAS)["AP"]


def test_ap_fills_fields_a_converted_set_lacks(crowd_gt: dict) -> None:
    for ann in crowd_gt["annotations"]:
        del ann["num_keypoints"], ann["iscrowd"]  # e.g. mmpose's OneHand10K JSON has no num_keypoints
    assert metrics.coco_keypoint_ap(crowd_gt, _perfect(crowd_gt), COCO_SIGMAS)["AP"] == pytest.approx(1.0)


def test_ap_rejects_empty_or_misfitting_detections(crowd_gt: dict) -> None:
    with pytest.raises(PosezooError, match="no detections"):
        metrics.coco_keypoint_ap(crowd_gt, [], COCO_SIGMAS)
    stray = _perfect(crowd_gt)[:1]
    stray[0]["image_id"] = 99
    with pytest.raises(PosezooError, match=r"image ids \[99\]"):
        metrics.coco_keypoint_ap(crowd_gt, stray, COCO_SIGMAS)
    with pytest.raises(PosezooError, match="do not hold 5 x, y, v triplets"):
        metrics.coco_keypoint_ap(crowd_gt, _perfect(crowd_gt), COCO_SIGMAS[:5])


# --- NME, PCK, EPE --------------------------------------------------------------------------

# Two instances of three points. Instance 0: errors 3-4-5 = 5 px, 0 px, and an unlabelled point
# 100 px off. Instance 1: errors 6 px and 8 px, and 10 px on an unlabelled point.
GT = np.zeros((2, 3, 2))
PRED = np.array([[[3.0, 4.0], [0.0, 0.0], [100.0, 0.0]], [[6.0, 0.0], [0.0, 8.0], [10.0, 0.0]]])
VISIBLE = np.array([[True, True, False], [True, True, False]])


def test_nme_per_instance_ignores_unlabelled_points() -> None:
    # instance 0: mean(5, 0) / 10 = 0.25; instance 1: mean(6, 8) / 20 = 0.35
    assert metrics.nme(PRED, GT, VISIBLE, np.array([10.0, 20.0])) == pytest.approx([0.25, 0.35])


def test_nme_of_an_instance_without_labelled_points_is_nan() -> None:
    result = metrics.nme(PRED, GT, np.array([[True, True, False], [False, False, False]]), np.array([10.0, 20.0]))
    assert result[0] == pytest.approx(0.25) and math.isnan(result[1])
    with pytest.raises(PosezooError, match="positive normaliser"):
        metrics.nme(PRED, GT, VISIBLE, np.array([10.0, 0.0]))


def test_pck_and_epe_pool_labelled_points() -> None:
    # sizes 30 and 35, threshold 0.2 → radii 6 and 7: 5 < 6 yes, 0 < 6 yes, 6 < 7 yes, 8 < 7 no → 3/4
    assert metrics.pck(PRED, GT, VISIBLE, np.array([30.0, 35.0]), 0.2) == pytest.approx(0.75)
    # sizes 25 and 35 → radii 5 and 7: "strictly less" (as mmpose) also drops the 5 px point → 2/4
    assert metrics.pck(PRED, GT, VISIBLE, np.array([25.0, 35.0]), 0.2) == pytest.approx(0.5)
    assert metrics.epe(PRED, GT, VISIBLE) == pytest.approx((5 + 0 + 6 + 8) / 4)
    with pytest.raises(PosezooError, match="no labelled keypoint"):
        metrics.epe(PRED, GT, np.zeros((2, 3), dtype=bool))


def test_normalisers_from_schema_and_boxes() -> None:
    kps = np.zeros((1, 68, 3))
    kps[0, 36, :2], kps[0, 45, :2] = (100, 200), (160, 280)
    assert metrics.interocular_distance(kps, load_schema("ibug68")) == pytest.approx([100.0])
    with pytest.raises(PosezooError, match="inter-ocular"):
        metrics.interocular_distance(kps, load_schema("hand21"))
    assert metrics.bbox_size(np.array([[5, 5, 30, 40], [0, 0, 50, 20]])) == pytest.approx([40.0, 50.0])


# --- schemas --------------------------------------------------------------------------------


def test_schemas_load_with_their_normalisation_facts() -> None:
    assert schema_names() == ["coco17", "hand21", "ibug68", "wflw98"]
    coco = load_schema("coco17")
    assert coco.count == 17 and coco.task == "body" and coco.names[0] == "nose"
    from pycocotools.cocoeval import Params

    assert np.allclose(coco.sigmas, Params(iouType="keypoints").kpt_oks_sigmas)  # COCO's own values
    assert load_schema("ibug68").interocular == (36, 45)
    assert load_schema("wflw98").interocular == (60, 72)
    hand = load_schema("hand21")
    assert hand.normalize == "bbox" and hand.names[0] == "wrist" and hand.names[-1] == "pinky_tip"
    for name in schema_names():
        schema = load_schema(name)
        assert len(schema.names) == schema.count == schema_for_count(schema.count).count


def test_unknown_schema_and_count_name_the_known_ones() -> None:
    with pytest.raises(PosezooError, match="coco17 \\(17\\), hand21 \\(21\\), ibug68 \\(68\\), wflw98 \\(98\\)"):
        schema_for_count(29)
    with pytest.raises(PosezooError, match="use one of coco17, hand21, ibug68, wflw98"):
        load_schema("cofw29")
