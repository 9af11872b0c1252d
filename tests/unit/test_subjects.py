"""Subject-centred manifests: detector → ROI → tracking step → three disjoint, seeded splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.calibration.reader import iter_inputs
from pipeline.calibration.sampler import SamplingParams
from pipeline.calibration.sources import resolve
from pipeline.calibration.subjects import SPLITS, write_subject_manifests
from pipeline.errors import PosezooError
from pipeline.registry import InputSpec, load_model
from pipeline.roi.conventions import roi_spec
from pipeline.roi.detectors import Detection
from pipeline.roi.geometry import Roi

PARAMS = SamplingParams(num_calibration=30, num_holdout=12, seed=0, random_crop_side=(0.5, 1.0), box_scale=1.25, holdout_fraction=0.34, allow_fewer=False)
COUNTS = {"calibration": 30, "validation": 10, "holdout": 12}
SPEC = InputSpec(32, 32, 3, "NHWC", "RGB", (0.0, 1.0), "stretch")


def _detect(img) -> list[Detection]:
    """Two palms per photo, none in photos lower than 60 px; keypoint 0 below keypoint 2 (upright)."""
    if img.size[1] < 60:
        return []
    out = []
    for k, x in enumerate((5.0, 35.0)):
        keypoints = np.zeros((7, 2))
        keypoints[0], keypoints[2] = (x + 10, 40.0), (x + 10, 20.0)
        out.append(Detection(0.9 - 0.1 * k, (x, 15.0, 20.0, 30.0), keypoints))
    return out


def _track(img, roi: Roi) -> tuple[float, Roi | None]:
    """Presence 0.9 for the first palm, 0.2 (dropped) for the second; tracked ROI: 5 px lower."""
    return (0.9 if roi.cx < 32 else 0.2), Roi(roi.cx, roi.cy + 5.0, roi.width, roi.height, roi.rotation)


def _write(photo_folder: Path, out: Path) -> dict:
    photos = resolve({"kind": "folder", "path": str(photo_folder)}, photo_folder)
    convention = roi_spec(load_model("hand_landmark_full"))
    return write_subject_manifests("hand_landmark_full", photos, convention, _detect, _track, PARAMS, COUNTS, 0.3, "test", out)


def test_splits_are_disjoint_by_subject_and_photo(photo_folder: Path, tmp_path: Path) -> None:
    docs = _write(photo_folder, tmp_path / "m")
    subjects = {split: {s["subject"] for s in docs[split]["samples"]} for split in SPLITS}
    photos = {split: {s["sha256"] for s in docs[split]["samples"]} for split in SPLITS}
    assert subjects["calibration"].isdisjoint(subjects["validation"]) and subjects["calibration"].isdisjoint(subjects["holdout"])
    assert subjects["validation"].isdisjoint(subjects["holdout"])
    assert photos["holdout"].isdisjoint(photos["calibration"] | photos["validation"])  # held-out photos never calibrate
    for split in SPLITS:
        doc = docs[split]
        assert doc["num_samples"] == COUNTS[split] and doc["distinct_subjects"] == len(subjects[split]) == len(doc["subjects"])
        assert doc["border"] == "replicate" and doc["detector"] == "palm_detection_full"
        assert all(s["subject"].endswith("#0") for s in doc["samples"])  # the second palm is dropped by presence
        assert len(doc["rejected_by_presence"]) == 4 and "presence 0.20" in doc["rejected_by_presence"][0]
        assert len(doc["photos_without_subject"]) == 2
    # Samples alternate between the tracked ROI (first, unjittered) and the detection ROI.
    first = docs["calibration"]["samples"][0]
    tracked = next(s["tracked_roi"] for s in docs["calibration"]["subjects"] if s["id"] == first["subject"])
    assert first["roi"] == tracked and first["photometric"] == [1.0, 0.0]
    assert all(s["photometric"] != [1.0, 0.0] for s in docs["calibration"]["samples"][len(subjects["calibration"]) :])


def test_manifests_are_seeded_and_readable(photo_folder: Path, tmp_path: Path) -> None:
    _write(photo_folder, tmp_path / "a")
    _write(photo_folder, tmp_path / "b")
    for name in ("calibration.json", "validation.json", "holdout.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    inputs = list(iter_inputs(tmp_path / "a" / "calibration.json", SPEC))
    assert len(inputs) == 30 and inputs[0][1].shape == (1, 32, 32, 3) and 0.0 <= inputs[0][1].min() <= inputs[0][1].max() <= 1.0
    assert json.loads((tmp_path / "a" / "holdout.json").read_text())["split"] == "holdout"


def test_photos_without_subjects_are_skipped_and_no_subject_is_an_error(photo_folder: Path, tmp_path: Path) -> None:
    photos = resolve({"kind": "folder", "path": str(photo_folder)}, photo_folder)
    convention = roi_spec(load_model("hand_landmark_full"))
    with pytest.raises(PosezooError, match="found no subject in any of its 6 photos for hand_landmark_full; add photos"):
        write_subject_manifests("hand_landmark_full", photos, convention, lambda img: [], None, PARAMS, COUNTS, 0.3, "test", tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written
    only_first = [p for p in photos if p.path.name == "photo_3.jpg"]  # one photo, one kept subject: no validation one
    with pytest.raises(PosezooError, match="no validation subject"):
        write_subject_manifests("hand_landmark_full", only_first, convention, _detect, _track, PARAMS, COUNTS, 0.3, "test", tmp_path / "y")


def test_contact_sheet_tiles_are_photos_for_subjects_and_one_file_for_random_crops(tmp_path: Path) -> None:
    from dataclasses import replace

    from PIL import Image

    from pipeline.calibration.sampler import write_manifests
    from pipeline.calibration.sources import Photo, _tiles

    sheet = tmp_path / "sheet.png"
    Image.new("RGB", (100, 60), (90, 90, 90)).save(sheet)
    tiles = _tiles({"grid": [2, 3]}, sheet)
    assert tiles[0] == (0, 0, 33, 30) and tiles[-1] == (66, 30, 100, 60) and len(tiles) == 6
    assert _tiles({}, sheet) == [None]
    base = Photo(id="sheet", origin="test", path=sheet, sha256="ab" * 32, split="calibration")
    photos = [replace(base, id=f"sheet[{k}]", tile=t, sheet="sheet") for k, t in enumerate(tiles)]
    photos.append(Photo(id="other", origin="test", path=sheet, sha256="cd" * 32, split="holdout"))
    written = write_manifests(photos, PARAMS, "test", True, tmp_path / "off")
    calibration = json.loads(written["calibration"].read_text())
    assert {s["photo"] for s in calibration["samples"]} == {"sheet"} and calibration["distinct_photos"] == 1
    # The subject finder sees each tile: the whole-image convention makes one subject per tile, placed in the sheet.
    from pipeline.calibration.subjects import find_subjects
    from pipeline.roi.conventions import Augment, RoiSpec

    subjects, skipped, _ = find_subjects(photos, RoiSpec(kind="whole_image", origin=sheet, augment=Augment()), None)
    assert len(subjects) == 7 and not skipped
    assert (subjects[5].roi.cx, subjects[5].roi.cy) == (83.0, 45.0)
