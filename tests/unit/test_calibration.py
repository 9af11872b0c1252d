"""Calibration sources, seeded sampling, manifests and preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.calibration.images import crop_and_resize, load_rgb, to_tensor
from pipeline.calibration.reader import iter_inputs
from pipeline.calibration.sampler import SamplingParams, write_manifests
from pipeline.calibration.sources import resolve
from pipeline.errors import PosezooError
from pipeline.registry import InputSpec

SPEC = InputSpec(height=32, width=32, channels=3, layout="NHWC", color="RGB", value_range=(0.0, 1.0), resize="stretch")


def params(**overrides: object) -> SamplingParams:
    base = dict(num_calibration=10, num_holdout=4, seed=0, random_crop_side=(0.5, 1.0), box_scale=1.25, holdout_fraction=0.34, allow_fewer=False)
    base.update(overrides)
    return SamplingParams(**base)  # type: ignore[arg-type]


def sample(folder: Path, out: Path, random_crops: bool = True, **overrides: object) -> dict[str, dict]:
    photos = resolve({"kind": "folder", "path": str(folder)}, folder)
    written = write_manifests(photos, params(**overrides), "test", random_crops, out)
    return {k: json.loads(v.read_text()) for k, v in written.items()}


def test_manifests_are_seeded_and_disjoint(photo_folder: Path, tmp_path: Path) -> None:
    first = sample(photo_folder, tmp_path / "a")
    second = sample(photo_folder, tmp_path / "b")
    assert first == second
    calib = {s["sha256"] for s in first["calibration"]["samples"]}
    hold = {s["sha256"] for s in first["holdout"]["samples"]}
    assert len(first["calibration"]["samples"]) == 10 and len(first["holdout"]["samples"]) == 4
    assert calib.isdisjoint(hold)
    assert first["calibration"]["distinct_photos"] == len(calib) == 4
    assert "crops of 4 distinct photos" in first["calibration"]["note"]
    other_seed = sample(photo_folder, tmp_path / "c", seed=1)
    assert other_seed["calibration"]["samples"] != first["calibration"]["samples"]


def test_manifest_images_are_copied_and_hashed(photo_folder: Path, tmp_path: Path) -> None:
    manifests = sample(photo_folder, tmp_path / "m")
    import hashlib

    for entry in manifests["calibration"]["samples"]:
        data = (tmp_path / "m" / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PosezooError, match=r"empty: calibration folder has no images"):
        resolve({"kind": "folder", "path": "empty"}, tmp_path)


def test_fewer_images_than_asked(photo_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(PosezooError, match=r"has 4 calibration images but 10 were asked.*allow_fewer"):
        sample(photo_folder, tmp_path / "x", random_crops=False)
    assert not (tmp_path / "x" / "manifest.json").exists()
    allowed = sample(photo_folder, tmp_path / "y", random_crops=False, allow_fewer=True, num_holdout=2)
    assert allowed["calibration"]["num_samples"] == 4


def test_corrupt_image_names_the_file(photo_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photo_folder.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(PosezooError, match=r"broken\.jpg: unreadable or corrupt image.*remove or replace") as err:
        sample(folder, tmp_path / "out", holdout_fraction=0.01)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out" / "images").exists()


def test_grayscale_and_alpha_are_converted(photo_folder: Path) -> None:
    for name in ("photo_1.png", "photo_2.png"):
        img = load_rgb(photo_folder / name)
        assert img.mode == "RGB"
        x = to_tensor(crop_and_resize(img, [0, 0, img.width, img.height], SPEC), SPEC, "NHWC")
        assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0


def test_preprocessing_layout_color_and_range() -> None:
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[..., 0] = 255  # pure red
    bgr = InputSpec(height=4, width=4, channels=3, layout="NCHW", color="BGR", value_range=(0.0, 255.0), resize="stretch")
    x = to_tensor(pixels, bgr, "NCHW")
    assert x.shape == (1, 3, 4, 4)
    assert x[0, 2].min() == 255.0 and x[0, 0].max() == 0.0  # red lands in the last (R of BGR) plane


def test_letterbox_pads_with_black() -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    spec = InputSpec(height=20, width=20, channels=3, layout="NHWC", color="RGB", value_range=(0.0, 1.0), resize="letterbox")
    out = crop_and_resize(img, [0, 0, 40, 20], spec)
    assert out[0, 10].tolist() == [0, 0, 0] and out[10, 10].tolist() == [255, 255, 255]


def test_coco_source_crops_around_boxes(tmp_path: Path, photo_folder: Path) -> None:
    coco = {
        "images": [{"id": 1, "file_name": "photo_0.jpg"}, {"id": 2, "file_name": "photo_3.jpg"}, {"id": 3, "file_name": "photo_4.jpg"}],
        "annotations": [
            {"image_id": 1, "bbox": [10, 10, 20, 10], "category_id": 1},
            {"image_id": 2, "bbox": [0, 0, 8, 8], "category_id": 1},
            {"image_id": 3, "bbox": [5, 5, 8, 8], "category_id": 2},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    photos = resolve({"kind": "coco", "annotations": "ann.json", "images": str(photo_folder), "category_id": 1}, tmp_path)
    assert [p.id for p in photos] == ["1", "2"]
    out = write_manifests(photos, params(num_calibration=3, num_holdout=2, holdout_fraction=0.5), "coco", False, tmp_path / "m")
    manifest = json.loads(out["calibration"].read_text())
    crop = manifest["samples"][0]["crop"]
    assert crop[2] - crop[0] == pytest.approx(crop[3] - crop[1])  # square
    # box 10,10,20,10 → side 20*1.25 = 25 centred on (20, 15)
    assert crop == pytest.approx([7.5, 2.5, 32.5, 27.5]) or crop == pytest.approx([-1.0, -1.0, 9.0, 9.0])


def test_iter_inputs_yields_model_tensors(photo_folder: Path, tmp_path: Path) -> None:
    sample(photo_folder, tmp_path / "m")
    batches = list(iter_inputs(tmp_path / "m" / "manifest.json", SPEC, "NCHW"))
    assert len(batches) == 10
    assert all(x.shape == (1, 3, 32, 32) for _, x in batches)


@pytest.mark.parametrize("params_text, sources_text, message", [
    ("calibration: {source: s, crop_scale: [0.35, 1.0]}\n", "sources: {s: {kind: folder, path: .}}\n",
     "params.yaml: calibration: 'crop_scale' is now called 'random_crop_side'"),
    ("calibration: {source: s, random_crop_side: [0.35, 1.0]}\n", "sources: {s: {kind: coco, annotations: a.json, images: ., crop_scale: 1.25}}\n",
     "sources.yaml: sources.s: 'crop_scale' is now called 'box_scale'"),
], ids=["params", "sources"])
def test_an_old_crop_key_names_its_new_name(tmp_path: Path, capsys: pytest.CaptureFixture[str], params_text: str, sources_text: str, message: str) -> None:
    from pipeline.cli import main

    (tmp_path / "params.yaml").write_text(params_text)
    (tmp_path / "sources.yaml").write_text(sources_text)
    code = main(["calibrate", "--params", str(tmp_path / "params.yaml"), "--declarations", str(tmp_path / "sources.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
