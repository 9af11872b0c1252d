"""Subject-centred calibration, validation and held-out sets: the ROI each model is deployed on.

A landmark model never sees a random crop of a photo: its pipeline's detector finds the subject
and the registry's ``roi`` convention turns the detection into a rotated, enlarged square
(:mod:`pipeline.roi`). This module runs that first-frame path on every photo of a calibration
source — the float detector that ships with the model (MediaPipe's palm / pose / face detector,
run with LiteRT) → ``from_detection`` ROI — then one tracking step as MediaPipe runs it: the
float landmark model on that ROI, its presence score (a subject below the graph's threshold is
dropped, as MediaPipe drops it), and the ``from_landmarks`` ROI of its landmarks, which is what
the model sees on every later frame. Each kept detection is a *subject*; samples alternate
between its tracked and its first-frame ROI, each after the first with seeded jitter of
rotation, scale and centre (within the spread the detector's ROI shows against the tracked one)
plus brightness / contrast jitter.

Three disjoint splits: subjects of the source's held-out photos are ``holdout`` (the reported
drift); subjects of its calibration photos are divided, by subject and with the seed, into
``calibration`` and ``validation`` (for choosing recipes). No subject feeds two splits, and no
held-out photo feeds calibration. Manifests say how many distinct subjects and photos back each
split, and which photos showed no subject (skipped, counted). Models whose convention is the
whole image (YOLO-pose, MoveNet's first frame) take each photo, letterboxed, as one subject.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from pipeline.atomic import atomic_path, write_json
from pipeline.calibration.images import load_rgb, to_tensor
from pipeline.calibration.sampler import SamplingParams, manifest_document, split_photos
from pipeline.calibration.sources import Photo
from pipeline.errors import PosezooError
from pipeline.evaluate.decoders import decoder_for
from pipeline.registry import ModelSpec
from pipeline.roi.conventions import Augment, RoiSpec
from pipeline.roi.geometry import Roi, roi_from_box, roi_from_points
from pipeline.roi.warp import to_image, warp

SPLITS = ("calibration", "validation", "holdout")
FILES = {"calibration": "calibration.json", "validation": "validation.json", "holdout": "holdout.json"}


@dataclass(frozen=True)
class Subject:
    """One subject: its photo, first-frame (detection) ROI, tracked ROI and the scores that kept it."""

    photo: Photo
    index: int
    roi: Roi  # first frame: from the detection
    score: float  # detector score
    tracked: Roi | None = None  # later frames: from the float landmark model's landmarks on ``roi``
    presence: float | None = None  # the landmark model's presence score on ``roi``

    @property
    def id(self) -> str:
        return f"{self.photo.id}#{self.index}"

    def moved(self, dx: float, dy: float) -> "Subject":
        """The subject with its ROIs shifted by (dx, dy): from a tile's pixels to its sheet's."""
        if not (dx or dy):
            return self
        shift = lambda r: Roi(r.cx + dx, r.cy + dy, r.width, r.height, r.rotation)  # noqa: E731
        return Subject(self.photo, self.index, shift(self.roi), self.score, shift(self.tracked) if self.tracked else None, self.presence)

    def bases(self) -> list[Roi]:
        """The ROIs samples are drawn around: the tracked one first, when there is one."""
        return [self.tracked, self.roi] if self.tracked is not None else [self.roi]

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "score": round(self.score, 4), "roi": self.roi.as_list()}
        if self.tracked is not None:
            out |= {"presence": round(float(self.presence), 4), "tracked_roi": self.tracked.as_list()}  # type: ignore[arg-type]
        return out


Detect = Callable[[Any], list[Any]]  # PIL image → detections (pipeline.roi.detectors.Detection)
Track = Callable[[Any, Roi], tuple[float, Roi | None]]  # (image, ROI) → (presence score, tracked ROI)


def tracker(spec: ModelSpec, run: Callable[[np.ndarray], list[np.ndarray]], convention: RoiSpec) -> Track | None:
    """One tracking step of the model's pipeline, or None when its decoder gives no landmark list to track from.

    The landmark model runs on the ROI (warped as in deployment); its presence output is scored
    as the graph scores it; all of its points (BlazePose's auxiliary ones included, which the
    tracking rule uses) are mapped back to the image and turned into the ``from_landmarks`` ROI.
    """
    if spec.decoder.get("kind") != "landmarks_flat" or convention.from_landmarks is None:
        return None
    count = int(spec.decoder.get("num_points", spec.keypoint_count))
    every_point = replace(spec, keypoint_count=count)  # the decoder keeps keypoints.count points; tracking needs all
    decode = decoder_for(every_point)

    def track(img: Any, roi: Roi) -> tuple[float, Roi | None]:
        outputs = run(to_tensor(warp(img, roi, spec.input, convention.border), spec.input, "NHWC"))
        presence = convention.presence.score(outputs) if convention.presence is not None else 1.0
        points = decode(outputs, every_point).keypoints[0].astype(np.float64)
        found = roi_from_points(to_image(points, roi, spec.input), np.ones(count, bool), convention.from_landmarks)  # type: ignore[arg-type]
        return presence, found[0] if found is not None else None

    return track


def find_subjects(photos: Sequence[Photo], convention: RoiSpec, detect: Detect | None, track: Track | None = None) -> tuple[list[Subject], list[str], list[str]]:
    """Every subject of every photo; the ids of photos where none was found (skipped); the
    detections the landmark model's presence score rejected."""
    subjects: list[Subject] = []
    skipped: list[str] = []
    rejected: list[str] = []
    sheet: tuple[str, Any] = ("", None)  # the last decoded file: a contact sheet's tiles share it
    for photo in tqdm(photos, desc="finding subjects", leave=False):
        if sheet[0] != photo.sha256:
            sheet = (photo.sha256, load_rgb(photo.path))
        img, (dx, dy) = sheet[1], (0, 0)
        if photo.tile is not None:  # one picture of a contact sheet: found in the tile, placed in the sheet
            img, (dx, dy) = img.crop(photo.tile), photo.tile[:2]
        if convention.kind == "whole_image":
            side = float(max(img.size))
            subjects.append(Subject(photo, 0, Roi(dx + img.size[0] / 2, dy + img.size[1] / 2, side, side, 0.0), 1.0))
            continue
        assert detect is not None and convention.from_detection is not None
        kept = 0
        for k, det in enumerate(d for d in detect(img) if d.score >= convention.min_score):
            roi = roi_from_box(det.box, det.keypoints, convention.from_detection)
            subject = Subject(photo, k, roi, float(det.score))
            if track is not None:
                presence, tracked = track(img, roi)
                if presence < (convention.presence.threshold if convention.presence else 0.0) or tracked is None:
                    rejected.append(f"{subject.id} (detector {det.score:.2f}, presence {presence:.2f})")
                    continue
                subject = Subject(photo, k, roi, float(det.score), tracked, presence)
            subjects.append(subject.moved(dx, dy))
            kept += 1
        if not kept:
            skipped.append(photo.id)
    return subjects, skipped, rejected


def split_subjects(photos: Sequence[Photo], subjects: Sequence[Subject], params: SamplingParams, validation_fraction: float) -> dict[str, list[Subject]]:
    """Calibration / validation / held-out subjects (see the module docstring)."""
    by_photo = split_photos(photos, params)
    holdout_ids = {p.id for p in by_photo["holdout"]}
    calibration_ids = {p.id for p in by_photo["calibration"]}
    pool = [s for s in subjects if s.photo.id in calibration_ids]
    order = np.random.default_rng([params.seed, 7]).permutation(len(pool))
    n_val = min(len(pool) - 1, max(1, int(round(len(pool) * validation_fraction)))) if len(pool) > 1 else 0
    chosen = set(int(i) for i in order[:n_val])
    return {
        "calibration": [s for i, s in enumerate(pool) if i not in chosen],
        "validation": [s for i, s in enumerate(pool) if i in chosen],
        "holdout": [s for s in subjects if s.photo.id in holdout_ids],
    }


def jitter(rng: np.random.Generator, roi: Roi, augment: Augment) -> tuple[Roi, list[float]]:
    """A seeded variation of ``roi`` and its photometric [gain, offset] (see :class:`Augment`)."""
    u = rng.uniform(-1.0, 1.0, size=6)
    side = math.sqrt(roi.width * roi.height)
    moved = Roi(
        roi.cx + u[0] * augment.shift * side,
        roi.cy + u[1] * augment.shift * side,
        roi.width * (1 + u[2] * augment.scale),
        roi.height * (1 + u[2] * augment.scale),
        roi.rotation + math.radians(u[3] * augment.rotation_degrees),
    )
    return moved, [round(1 + u[4] * augment.contrast, 6), round(u[5] * augment.brightness * 255.0, 6)]


def draw_subject_samples(subjects: Sequence[Subject], count: int, split: str, seed: int, augment: Augment) -> list[dict[str, Any]]:
    """``count`` samples round-robin over ``subjects``, alternating between each subject's tracked
    and first-frame ROI: its first sample is the tracked ROI as is, the following ones are
    jittered (seeded per split)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 11])
    samples = []
    for i in range(count):
        subject = subjects[i % len(subjects)]
        rounds, bases = i // len(subjects), subject.bases()
        base = bases[rounds % len(bases)]
        roi, photometric = (base, [1.0, 0.0]) if rounds == 0 else jitter(rng, base, augment)
        photo = subject.photo
        samples.append(
            {
                "id": f"{split}-{i:04d}",
                "photo": photo.id,
                "subject": subject.id,
                "origin": photo.origin,
                "sha256": photo.sha256,
                "file": f"images/{photo.sha256}{photo.path.suffix.lower()}",
                "roi": roi.as_list(),
                "photometric": photometric,
            }
        )
    return samples


def write_subject_manifests(
    model: str, photos: Sequence[Photo], convention: RoiSpec, detect: Detect | None, track: Track | None, params: SamplingParams,
    counts: dict[str, int], validation_fraction: float, source_name: str, out_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Write ``calibration.json``, ``validation.json``, ``holdout.json`` and ``images/`` (atomically, as one directory).

    Returns the manifests. A split without a subject is a one-line error naming the source.
    """
    subjects, skipped, rejected = find_subjects(photos, convention, detect, track)
    if not subjects:
        raise PosezooError(
            f"calibration source '{source_name}': the {convention.detector} detector found no subject in any of its {len(photos)} photos "
            f"for {model}; add photos that show one"
        )
    splits = split_subjects(photos, subjects, params, validation_fraction)
    manifests = {}
    for split in SPLITS:
        chosen = splits[split]
        if not chosen:
            raise PosezooError(
                f"calibration source '{source_name}': no {split} subject for {model} ({len(subjects)} found in total, photos without one: "
                f"{', '.join(skipped) or 'none'}); add photos showing the subject to that split"
            )
        samples = draw_subject_samples(chosen, counts[split], split, params.seed, convention.augment)
        distinct_photos = len({s.photo.sha256 for s in chosen})  # files: a contact sheet's tiles are one
        note = (
            f"{len(samples)} samples of {len(chosen)} distinct subjects in {distinct_photos} photos "
            + (f"({'tracked and ' if track else ''}first-frame ROIs from the {convention.detector} detector, seeded jitter)" if convention.kind == "rect" else "(whole photos, letterboxed, seeded jitter)")
        )
        doc = manifest_document(source_name, split, params.seed, samples, note)
        doc |= {
            "model": model,
            "roi_kind": convention.kind,
            "detector": convention.detector,
            "border": convention.border,
            "distinct_subjects": len(chosen),
            "subjects": [s.record() for s in chosen],
            "photos_without_subject": skipped,
            "rejected_by_presence": rejected,
        }
        manifests[split] = doc
    with atomic_path(out_dir) as tmp:
        (tmp / "images").mkdir(parents=True)
        for photo in {s.photo.sha256: s.photo for s in subjects}.values():
            shutil.copyfile(photo.path, tmp / "images" / f"{photo.sha256}{photo.path.suffix.lower()}")
        for split, doc in manifests.items():
            write_json(tmp / FILES[split], doc)
    return manifests
