"""Decoders: raw model outputs → :class:`Poses` (keypoints in model-input pixels, x right, y down).

One function per output kind, chosen by the registry's ``decoder.kind``; each reads its layout
facts (values per point, coordinate convention, stride, thresholds) from the registry's
``decoder:`` block, so a new model of a known output kind needs no code. Outputs arrive as float
arrays: the runners already dequantize integer outputs with the tensor's scale and zero point.

Single-instance kinds always return one instance; multi-instance kinds (see
:func:`is_multi_instance`) return zero or more, with boxes, so a float and an int8 run can be
paired with :func:`match_instances` before their keypoints are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pipeline.errors import PosezooError
from pipeline.registry import ModelSpec


@dataclass(frozen=True)
class Poses:
    """Decoded instances, coordinates in model-input pixels (x right, y down)."""

    keypoints: np.ndarray  # (N, K, 2) float32 x, y
    scores: np.ndarray  # (N, K) float32 per-keypoint confidence in [0, 1]; 1.0 where the model gives none
    instance_scores: np.ndarray  # (N,) float32; 1.0 for single-instance models
    boxes: np.ndarray | None  # (N, 4) float32 x0, y0, x1, y1 input pixels (multi-person models), else None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


Decoder = Callable[[Sequence[np.ndarray], ModelSpec], Poses]

#: Kinds whose decoder returns N >= 0 detected instances instead of exactly one.
MULTI_INSTANCE_KINDS = frozenset({"yolov8_pose"})


# --- shared helpers ---------------------------------------------------------------------------


def _field(spec: ModelSpec, key: str, default: Any = None, allowed: Sequence[str] | None = None) -> Any:
    """``decoder.<key>`` of ``spec``; missing required keys and unknown choices name the file to fix."""
    value = spec.decoder.get(key, default)
    if value is None:
        raise PosezooError(f"{spec.path}: decoder.{key} is missing; the {spec.decoder.get('kind')} decoder needs it")
    if allowed is not None and value not in allowed:
        raise PosezooError(f"{spec.path}: decoder.{key} is {value!r}; use one of {', '.join(allowed)}")
    return value


def _output(outputs: Sequence[np.ndarray], spec: ModelSpec) -> np.ndarray:
    return np.asarray(outputs[spec.keypoint_output], dtype=np.float32)


def _to_pixels(points: np.ndarray, coords: str, spec: ModelSpec) -> np.ndarray:
    """(..., 2) points in the registry's ``coords`` convention → (..., 2) x, y in input pixels."""
    size = np.array([spec.input.width, spec.input.height], dtype=np.float32)
    if coords == "input_pixels":
        return points.astype(np.float32)
    if coords == "normalized_xy":
        return (points * size).astype(np.float32)
    if coords == "normalized_yx":
        return (points[..., ::-1] * size).astype(np.float32)
    raise PosezooError(f"{spec.path}: decoder.coords {coords!r} is unknown; use input_pixels, normalized_xy or normalized_yx")


def _probability(values: np.ndarray, activation: str) -> np.ndarray:
    """Scores in [0, 1]: ``sigmoid`` for logits, ``none`` for values that already are probabilities.

    ``none`` still clips, because regressed probabilities (and their int8 dequantization) can
    overshoot [0, 1] slightly. The sigmoid is written with tanh, which cannot overflow.
    """
    if activation == "sigmoid":
        return (0.5 * (1.0 + np.tanh(0.5 * values))).astype(np.float32)
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def _single(keypoints: np.ndarray, scores: np.ndarray | None = None) -> Poses:
    """One instance from (K, 2) keypoints and optional (K,) scores (1.0 when the model gives none)."""
    k = keypoints.shape[0]
    point_scores = np.ones(k, dtype=np.float32) if scores is None else scores.astype(np.float32)
    return Poses(
        keypoints=keypoints.astype(np.float32)[None],
        scores=point_scores[None],
        instance_scores=np.ones(1, dtype=np.float32),
        boxes=None,
    )


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x0, y0, x1, y1 box with each of ``boxes`` (M, 4); degenerate boxes give 0, not NaN."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0).astype(np.float32)


# --- single-instance kinds --------------------------------------------------------------------


def landmarks_flat(outputs: Sequence[np.ndarray], spec: ModelSpec) -> Poses:
    """Flat regression output of ``num_points`` × ``values_per_point`` values (x, y first), e.g. MediaPipe.

    ``num_points`` is how many points the tensor holds (default: the keypoint count); only the
    first ``keypoints.count`` are body keypoints (BlazePose outputs 39 = 33 + 6 ROI helpers). The
    size is checked so a wrong ``outputs.keypoints`` index fails loudly instead of decoding noise.
    With ``score_index`` the point's value at that index is its confidence, passed through
    ``score_activation`` (BlazePose's visibility is a logit); without it scores are 1.0.
    """
    per_point = int(_field(spec, "values_per_point"))
    num_points = int(_field(spec, "num_points", spec.keypoint_count))
    values = _output(outputs, spec).reshape(-1)
    if values.size != num_points * per_point:
        raise PosezooError(
            f"{spec.path}: keypoint output has {values.size} values, expected {num_points * per_point} "
            f"(decoder.num_points {num_points} × values_per_point {per_point}); check outputs.keypoints and the decoder block"
        )
    if spec.keypoint_count > num_points:
        raise PosezooError(f"{spec.path}: keypoints.count {spec.keypoint_count} exceeds decoder.num_points {num_points}")
    points = values.reshape(num_points, per_point)[: spec.keypoint_count]
    xy = _to_pixels(points[:, :2], _field(spec, "coords"), spec)
    if "score_index" not in spec.decoder:
        return _single(xy)
    activation = _field(spec, "score_activation", "none", allowed=("none", "sigmoid"))
    return _single(xy, _probability(points[:, int(spec.decoder["score_index"])], activation))


def movenet_singlepose(outputs: Sequence[np.ndarray], spec: ModelSpec) -> Poses:
    """MoveNet SinglePose (1, 1, K, 3): two coordinates in the registry's ``coords`` order, then a score.

    Google's files give y, x normalized to the input (``coords: normalized_yx``); the score is
    already a probability.
    """
    values = _output(outputs, spec).reshape(-1, 3)[: spec.keypoint_count]
    if values.shape[0] != spec.keypoint_count:
        raise PosezooError(f"{spec.path}: keypoint output holds {values.shape[0]} points of (y, x, score), fewer than keypoints.count {spec.keypoint_count}")
    xy = _to_pixels(values[:, :2], _field(spec, "coords", allowed=("normalized_yx", "normalized_xy", "input_pixels")), spec)
    return _single(xy, _probability(values[:, 2], "none"))


def movenet_heatmaps(outputs: Sequence[np.ndarray], spec: ModelSpec) -> Poses:
    """Per-keypoint heatmaps (1, H/stride, W/stride, K), e.g. ST's MoveNet heatmap variants.

    Peak = argmax cell, refined by the quarter-cell shift toward the higher neighbour on each axis
    (HRNet's / mmpose's ``get_max_preds`` + ``get_final_preds`` post-processing). Chosen over DARK
    (Taylor expansion of the log-heatmap) because the shift is bounded (±0.25 cell) and needs only
    the sign of a neighbour difference, so it stays stable on int8 heatmaps whose peaks are flat
    plateaus or whose tails quantize to zero — where DARK's log and inverted Hessian are
    ill-conditioned and can throw the estimate cells away; for drift, a bounded decoder keeps the
    measured error the model's, not the decoder's.

    Cell (row i, column j) covers input pixels [j*stride, (j+1)*stride) × [i*stride, (i+1)*stride),
    so its centre is ((j + 0.5) * stride, (i + 0.5) * stride): the convention of ST's
    ``heatmaps_spe_postprocess`` ((argmax + 0.5) / res, normalized), which trained these heads.
    The score is the heatmap value at the argmax cell after ``activation`` (``none`` | ``sigmoid``).
    """
    stride = int(_field(spec, "stride"))
    activation = _field(spec, "activation", "none", allowed=("none", "sigmoid"))
    heat = _output(outputs, spec)
    heat = heat.reshape(heat.shape[-3:])
    rows, cols, channels = heat.shape
    if rows * stride != spec.input.height or cols * stride != spec.input.width or channels < spec.keypoint_count:
        raise PosezooError(
            f"{spec.path}: heatmap output is {rows}x{cols}x{channels}, which does not fit input "
            f"{spec.input.height}x{spec.input.width} with decoder.stride {stride} and {spec.keypoint_count} keypoints"
        )
    heat = _probability(heat[..., : spec.keypoint_count], activation)
    k = np.arange(spec.keypoint_count)
    peak_row, peak_col = np.divmod(heat.reshape(rows * cols, -1).argmax(axis=0), cols)
    dx = _quarter_shift(heat, peak_row, peak_col, k, axis=1)
    dy = _quarter_shift(heat, peak_row, peak_col, k, axis=0)
    xy = np.stack([(peak_col + 0.5 + dx) * stride, (peak_row + 0.5 + dy) * stride], axis=-1)
    return _single(xy.astype(np.float32), heat[peak_row, peak_col, k])


def _quarter_shift(heat: np.ndarray, row: np.ndarray, col: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """±0.25 toward the higher of the two neighbours along ``axis`` (0 = rows, 1 = columns); 0 at a border or a tie."""
    pos, limit = (row, heat.shape[0]) if axis == 0 else (col, heat.shape[1])
    inside = (pos > 0) & (pos < limit - 1)
    before, after = np.clip(pos - 1, 0, limit - 1), np.clip(pos + 1, 0, limit - 1)
    if axis == 0:
        diff = heat[after, col, k] - heat[before, col, k]
    else:
        diff = heat[row, after, k] - heat[row, before, k]
    return np.where(inside, 0.25 * np.sign(diff), 0.0)


# --- multi-instance kinds ---------------------------------------------------------------------


def yolov8_pose(outputs: Sequence[np.ndarray], spec: ModelSpec) -> Poses:
    """YOLOv8-pose head: per anchor box cx, cy, w, h, person score, then K × (x, y, conf).

    Keeps anchors scoring at least ``score_threshold``, then greedy NMS at ``iou_threshold`` (by
    hand in numpy: torchvision is not a dependency here), at most ``max_detections``, highest
    score first. ``coords`` says whether boxes and keypoints are normalized or in input pixels;
    ``keypoint_conf`` whether the per-keypoint confidences are probabilities or logits.
    """
    table = _anchor_table(_output(outputs, spec), spec)
    score_threshold = float(_field(spec, "score_threshold"))
    table = table[table[:, 4] >= score_threshold]
    coords = _field(spec, "coords", allowed=("normalized_xy", "input_pixels"))
    centre, size = _to_pixels(table[:, 0:2], coords, spec), _to_pixels(table[:, 2:4], coords, spec)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    keep = nms(boxes, table[:, 4], float(_field(spec, "iou_threshold")), int(_field(spec, "max_detections")))
    points = table[keep, 5:].reshape(len(keep), spec.keypoint_count, 3)
    conf = _field(spec, "keypoint_conf", allowed=("probability", "logit"))
    return Poses(
        keypoints=_to_pixels(points[..., :2], coords, spec),
        scores=_probability(points[..., 2], "sigmoid" if conf == "logit" else "none"),
        instance_scores=table[keep, 4].astype(np.float32),
        boxes=boxes[keep].astype(np.float32),
    )


def _anchor_table(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(anchors, values_per_anchor) from (1, V, N) or (1, N, V); the axis of length V holds the values.

    Exporters differ (Ultralytics' TFLite/ONNX give (1, 56, N), some re-exports transpose); when
    both axes have length V the Ultralytics layout is assumed.
    """
    per_anchor = int(_field(spec, "values_per_anchor"))
    if per_anchor != 5 + 3 * spec.keypoint_count:
        raise PosezooError(f"{spec.path}: decoder.values_per_anchor {per_anchor} is not 5 + 3 × keypoints.count {spec.keypoint_count}")
    table = raw.reshape(raw.shape[-2:])
    if table.shape[0] == per_anchor:
        return table.T
    if table.shape[1] == per_anchor:
        return table
    raise PosezooError(f"{spec.path}: output shape {raw.shape} has no axis of decoder.values_per_anchor {per_anchor}; check outputs.keypoints")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_detections: int) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first: a box is dropped when its IoU with a kept one exceeds the threshold.

    Same rule as ``torchvision.ops.nms`` (strictly greater IoU suppresses); a stable sort makes
    equal scores keep their anchor order, so float and int8 runs break ties the same way.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        best, order = order[0], order[1:]
        keep.append(int(best))
        order = order[box_iou(boxes[best], boxes[order]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def match_instances(a: Poses, b: Poses, iou_threshold: float) -> list[tuple[int, int]]:
    """Pairs (i in ``a``, j in ``b``) matched greedily by box IoU, highest IoU first, each instance at most once.

    A pair needs IoU >= ``iou_threshold``. Used to compare float and int8 detections of a
    multi-person model, whose instance order can differ between runs.
    """
    if a.boxes is None or b.boxes is None:
        raise PosezooError("match_instances needs boxes on both sides; single-instance decoders give none (compare instance 0)")
    if not len(a) or not len(b):
        return []
    iou = np.stack([box_iou(box, b.boxes) for box in a.boxes])
    pairs: list[tuple[int, int]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < iou_threshold:
            break
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs


DECODERS: Mapping[str, Decoder] = {
    "landmarks_flat": landmarks_flat,
    "movenet_singlepose": movenet_singlepose,
    "movenet_heatmaps": movenet_heatmaps,
    "yolov8_pose": yolov8_pose,
}


def is_multi_instance(spec: ModelSpec) -> bool:
    """True when the model's decoder returns N >= 0 detected instances (with boxes) rather than exactly one."""
    return spec.decoder.get("kind") in MULTI_INSTANCE_KINDS


def decoder_for(spec: ModelSpec) -> Decoder:
    """The decoder a registry entry names; unknown kinds are a clear error, never a silent guess."""
    kind: Any = spec.decoder.get("kind")
    if kind not in DECODERS:
        raise PosezooError(
            f"{spec.path}: decoder.kind {kind!r} has no decoder in this version (have: {', '.join(DECODERS)}); "
            "drift for this model cannot be measured yet"
        )
    return DECODERS[kind]
