"""MediaPipe's float detectors (palm, pose, face short range) run on LiteRT, decoded in numpy.

The landmark models only see a crop; which crop is decided by a detector. To crop real photos the
way MediaPipe does we run its own detector files, taken from the pinned ``mediapipe`` wheel
(never installed or imported: the project may not depend on it), and re-implement the graph
around them: ImageToTensorCalculator's centred letterbox, SsdAnchorsCalculator,
TensorsToDetectionsCalculator, NonMaxSuppressionCalculator (WEIGHTED, IoU) and
DetectionLetterboxRemovalCalculator. Every option is data, read from
``pipeline/registry/detectors/<name>.yaml`` where each value cites its MediaPipe v0.10.14 graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml
from PIL import Image

from pipeline.errors import PosezooError
from pipeline.evaluate.decoders import box_iou

DETECTORS_DIR = Path(__file__).resolve().parents[1] / "registry" / "detectors"

Runner = Callable[[np.ndarray], list[np.ndarray]]

_REQUIRED = {
    "input": ("width", "height", "range"),
    "anchors": ("num_layers", "min_scale", "max_scale", "input_size_width", "input_size_height",
                "anchor_offset_x", "anchor_offset_y", "strides", "aspect_ratios", "fixed_anchor_size"),
    "decode": ("num_boxes", "num_coords", "box_coord_offset", "keypoint_coord_offset", "num_keypoints",
               "num_values_per_keypoint", "x_scale", "y_scale", "w_scale", "h_scale", "sigmoid_score",
               "reverse_output_order", "min_score_thresh"),
    "nms": ("min_suppression_threshold", "overlap_type", "algorithm"),
    "keypoints": ("names",),
}


@dataclass(frozen=True)
class Detection:
    """One detected subject, in pixels of the image given to :class:`Detector`."""

    score: float
    box: tuple[float, float, float, float]  # x_min, y_min, width, height
    keypoints: np.ndarray  # (K, 2) x, y


def ssd_anchors(options: Mapping[str, Any]) -> np.ndarray:
    """(N, 4) anchors ``x_center, y_center, w, h`` (normalized) in SsdAnchorsCalculator's order.

    Port of ``GenerateAnchors`` (mediapipe/calculators/tflite/ssd_anchors_calculator.cc):
    consecutive layers with the same stride share one grid, each cell holding the anchors of all
    those layers (one per aspect ratio, plus the interpolated-scale one). The decoded boxes only
    line up with the model's outputs if this order is exactly MediaPipe's.
    """
    strides = [int(s) for s in options["strides"]]
    num_layers = int(options["num_layers"])
    if len(strides) != num_layers:
        raise ValueError(f"{len(strides)} strides for num_layers {num_layers}")
    lo, hi = float(options["min_scale"]), float(options["max_scale"])
    interp = float(options.get("interpolated_scale_aspect_ratio", 1.0))
    reduce_lowest = bool(options.get("reduce_boxes_in_lowest_layer", False))

    def scale(i: int) -> float:
        return (lo + hi) * 0.5 if len(strides) == 1 else lo + (hi - lo) * i / (len(strides) - 1.0)

    anchors: list[np.ndarray] = []
    layer = 0
    while layer < num_layers:
        ratios: list[float] = []
        scales: list[float] = []
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            s = scale(last)
            if last == 0 and reduce_lowest:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, s, s]
            else:
                ratios += [float(r) for r in options["aspect_ratios"]]
                scales += [s] * len(options["aspect_ratios"])
                if interp > 0.0:
                    nxt = 1.0 if last == len(strides) - 1 else scale(last + 1)
                    ratios.append(interp)
                    scales.append(float(np.sqrt(s * nxt)))
            last += 1
        sizes = np.array([[sc * np.sqrt(r), sc / np.sqrt(r)] for sc, r in zip(scales, ratios)])
        if options.get("fixed_anchor_size", False):
            sizes[:] = 1.0
        fh = int(np.ceil(int(options["input_size_height"]) / strides[layer]))
        fw = int(np.ceil(int(options["input_size_width"]) / strides[layer]))
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        centers = np.stack([(xs.ravel() + float(options["anchor_offset_x"])) / fw,
                            (ys.ravel() + float(options["anchor_offset_y"])) / fh], axis=1)
        grid = np.concatenate([np.repeat(centers, len(sizes), axis=0), np.tile(sizes, (fh * fw, 1))], axis=1)
        anchors.append(grid)
        layer = last
    return np.concatenate(anchors).astype(np.float32)


def decode_boxes(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                 options: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (M,), boxes (M, 4) ``xmin, ymin, xmax, ymax`` and keypoints (M, K, 2), normalized to the
    model input, of the anchors scoring at least ``min_score_thresh`` (TensorsToDetectionsCalculator)."""
    n, c = int(options["num_boxes"]), int(options["num_coords"])
    raw = np.asarray(raw_boxes, np.float32).reshape(n, c)
    logits = np.asarray(raw_scores, np.float32).reshape(n, -1).max(axis=1)
    if "score_clipping_thresh" in options:
        t = float(options["score_clipping_thresh"])
        logits = np.clip(logits, -t, t)
    scores = logits
    if options["sigmoid_score"]:  # in float64: exp(100) overflows float32
        scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    o = int(options["box_coord_offset"])
    xy = [0, 1] if options["reverse_output_order"] else [1, 0]  # XYWH vs YXHW (GetBoxFormat)
    scale_xy = np.array([float(options["x_scale"]), float(options["y_scale"])], np.float32)
    scale_wh = np.array([float(options["w_scale"]), float(options["h_scale"])], np.float32)
    center = raw[:, [o + xy[0], o + xy[1]]] / scale_xy * anchors[:, 2:] + anchors[:, :2]
    size = raw[:, [o + 2 + xy[0], o + 2 + xy[1]]] / scale_wh * anchors[:, 2:]
    boxes = np.concatenate([center - size / 2, center + size / 2], axis=1)
    k, v = int(options["num_keypoints"]), int(options["num_values_per_keypoint"])
    ko = int(options["keypoint_coord_offset"])
    kp = raw[:, ko:ko + k * v].reshape(n, k, v)[:, :, xy] / scale_xy[None]
    kp = kp * anchors[:, None, 2:] + anchors[:, None, :2]
    keep = (scores >= float(options["min_score_thresh"])) & (size >= 0).all(axis=1) & np.isfinite(size).all(axis=1)
    return scores[keep], boxes[keep], kp[keep]


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                 threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NonMaxSuppressionCalculator's WEIGHTED algorithm with IoU overlap.

    Take the best remaining detection; every remaining one overlapping it by more than
    ``threshold`` (itself included) is merged into it: box corners and keypoints become the
    score-weighted mean, the score stays the best one's. Output is sorted by score.
    """
    order = list(np.argsort(-scores, kind="stable"))
    out_s, out_b, out_k = [], [], []
    while order:
        best = order[0]
        sim = box_iou(boxes[best], boxes[order])
        cand = [i for i, s in zip(order, sim) if s > threshold]
        rest = [i for i, s in zip(order, sim) if s <= threshold]
        box, kp = boxes[best], keypoints[best]
        if cand:
            w = scores[cand][:, None]
            box = (boxes[cand] * w).sum(axis=0) / w.sum()
            kp = (keypoints[cand] * w[:, :, None]).sum(axis=0) / w.sum()
        out_s.append(scores[best]); out_b.append(box); out_k.append(kp)
        if len(rest) == len(order):  # MediaPipe stops when nothing was merged (degenerate box)
            break
        order = rest
    k = keypoints.shape[1:]
    return (np.asarray(out_s, np.float32), np.asarray(out_b, np.float32).reshape(-1, 4),
            np.asarray(out_k, np.float32).reshape((-1, *k)))


def letterbox(image: Image.Image, width: int, height: int,
              value_range: Sequence[float]) -> tuple[np.ndarray, tuple[float, float]]:
    """(1, H, W, 3) float input and the (horizontal, vertical) padding fraction on each side.

    As ImageToTensorCalculator with keep_aspect_ratio and BORDER_ZERO: the whole image is scaled to
    fit, centred, the border is pixel 0 (so the range minimum after scaling). Sampling is its
    OpenCV path's: bilinear without antialiasing, tensor pixel index u reads image index
    (u - pad) / s (cv::warpPerspective has no half-pixel centres; PIL's affine has, hence the
    0.5 - 0.5 / s shift below).
    """
    rgb = image.convert("RGB")
    w, h = rgb.size
    s = min(width / w, height / h)
    pad_x, pad_y = (width - w * s) / 2.0, (height - h * s) / 2.0
    shift = 0.5 - 0.5 / s
    warped = rgb.transform((width, height), Image.Transform.AFFINE,
                           (1 / s, 0.0, -pad_x / s + shift, 0.0, 1 / s, -pad_y / s + shift),
                           resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    lo, hi = float(value_range[0]), float(value_range[1])
    x = np.asarray(warped, np.float32) * ((hi - lo) / 255.0) + lo
    return x[None], (pad_x / width, pad_y / height)


class Detector:
    """One MediaPipe detector: ``detector(image)`` → detections sorted by score, after NMS."""

    def __init__(self, name: str, config: Mapping[str, Any], runner: Runner) -> None:
        self.name = name
        self.config = config
        self.keypoint_names: list[str] = list(config["keypoints"]["names"])
        self.anchors = ssd_anchors(config["anchors"])
        self._runner = runner

    def __call__(self, image: Image.Image) -> list[Detection]:
        inp, dec = self.config["input"], self.config["decode"]
        x, (px, py) = letterbox(image, int(inp["width"]), int(inp["height"]), inp["range"])
        raw_boxes, raw_scores = self._split(self._runner(x))
        scores, boxes, kps = decode_boxes(raw_boxes, raw_scores, self.anchors, dec)
        threshold = float(self.config["nms"]["min_suppression_threshold"])
        scores, boxes, kps = weighted_nms(scores, boxes, kps, threshold)
        # DetectionLetterboxRemovalCalculator, then to pixels of the original image.
        w, h = image.size
        scale = np.array([w / (1.0 - 2 * px), h / (1.0 - 2 * py)], np.float32)
        pad = np.array([px, py], np.float32)
        out = []
        for s, b, k in zip(scores, boxes, kps):
            lo, hi = (b[:2] - pad) * scale, (b[2:] - pad) * scale
            box = (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
            out.append(Detection(float(s), box, ((k - pad) * scale).astype(np.float32)))
        return out

    def _split(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The (boxes, scores) outputs, told apart by shape and checked against the YAML."""
        dec = self.config["decode"]
        n, c, k = int(dec["num_boxes"]), int(dec["num_coords"]), int(dec.get("num_classes", 1))
        boxes = [o for o in outputs if o.size == n * c and o.shape[-1] == c]
        scores = [o for o in outputs if o.size == n * k and o.shape[-1] == k]
        if len(outputs) != 2 or len(boxes) != 1 or len(scores) != 1:
            raise PosezooError(
                f"{DETECTORS_DIR / (self.name + '.yaml')}: model outputs {[o.shape for o in outputs]} do not match "
                f"num_boxes {n} x num_coords {c} / num_classes {k}; fix `decode:` to the model's shapes")
        return boxes[0], scores[0]


def load_config(path: Path) -> dict[str, Any]:
    """The detector YAML at ``path``, checked for every field :class:`Detector` reads."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PosezooError(f"{path}: cannot read the detector YAML ({str(err).splitlines()[0]}); fix the file") from err
    if not isinstance(config, dict):
        raise PosezooError(f"{path}: not a YAML mapping; write the detector as in palm_detection_full.yaml")
    for section, keys in {"source": ("kind", "member"), **_REQUIRED}.items():
        block = config.get(section)
        missing = [k for k in keys if not isinstance(block, dict) or k not in block]
        if missing:
            raise PosezooError(f"{path}: `{section}:` lacks {', '.join(missing)}; add them (see palm_detection_full.yaml)")
    anchors, dec, nms = config["anchors"], config["decode"], config["nms"]
    try:
        count = len(ssd_anchors(anchors))
    except (TypeError, ValueError) as err:
        raise PosezooError(f"{path}: bad `anchors:` ({err}); list one stride per layer and give numbers") from err
    if count != dec["num_boxes"]:
        raise PosezooError(f"{path}: the anchor options give {count} anchors but num_boxes is {dec['num_boxes']}; fix `anchors:` or `decode:`")
    if len(config["keypoints"]["names"]) != dec["num_keypoints"]:
        raise PosezooError(f"{path}: {len(config['keypoints']['names'])} keypoint names for num_keypoints {dec['num_keypoints']}; name each keypoint")
    if (nms["algorithm"], nms["overlap_type"]) != ("WEIGHTED", "INTERSECTION_OVER_UNION"):
        raise PosezooError(f"{path}: only `nms:` algorithm WEIGHTED with overlap_type INTERSECTION_OVER_UNION is implemented; use those")
    return config


def available_detectors() -> list[str]:
    """Names of the detectors in the registry."""
    return sorted(p.stem for p in DETECTORS_DIR.glob("*.yaml"))


def load_detector(name: str) -> Detector:
    """The detector ``name`` (``pipeline/registry/detectors/<name>.yaml``), its model fetched and
    verified from the pinned wheel, run on LiteRT's built-in fp32 kernels like every float reference."""
    from pipeline.convert.runners import tflite_runner
    from pipeline.fetch import fetch

    path = DETECTORS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise PosezooError(f"{path}: no such detector; use one of {', '.join(available_detectors())}")
    config = load_config(path)
    return Detector(name, config, tflite_runner(fetch(config["source"]), source_order=True))
