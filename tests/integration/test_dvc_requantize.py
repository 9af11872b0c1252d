"""Requantization under DVC: published int8 releases become per-channel and per-tensor variants.

A scratch project runs this checkout's dvc.yaml with two models whose source is a published int8
file (``models.<name>.source``): ST's YOLOv8n-pose 256 per-channel and TF Hub's MoveNet
Lightning int8. Each is dequantized and verified against the int8 original, exported as 4 int8
variants, and scored on the COCO people of the development data (pycocotools AP for YOLOv8n, mean
OKS for MoveNet), float and int8. Needs ``../shared`` (skips without it; its reference folder is
the ``POSEZOO_MIRROR`` the upstream URLs are served from) and PyPI (photo wheels).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED
from tests.integration.conftest import DVC, make_project, run

pytestmark = pytest.mark.slow

MODELS = {
    "yolov8n_pose": {"resolution": 256, "source": "st_int8_256_pc"},
    # MoveNet's float model differs from its int8 file by 11.5-15 output steps on average (its
    # ArgMax keypoint picks flip between near-equal heatmap peaks); a broken conversion is 32+.
    "movenet_lightning": {"resolution": 192, "source": "tfhub_int8", "dequantized_mean_steps": 20.0},
}

if not (SHARED / "models" / "reference").is_dir():
    pytest.skip(f"needs the published int8 models in {SHARED / 'models' / 'reference'}", allow_module_level=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("requantize")
    # evaluation/datasets.yaml names the COCO development people as ../../shared/... from its folder.
    (root.parent / "shared").symlink_to(SHARED.resolve(), target_is_directory=True)
    # Plain MinMax per-tensor: this test is about the requantization path, not the recipes (whose
    # bias correction would add minutes on YOLOv8n).
    # TFLite and ONNX only: the NNCF IR path is covered on hand_landmark_lite (test_dvc_pipeline.py).
    make_project(root, MODELS, ["shared_coco"], {"per_tensor": {"weights": "per_tensor"}}, formats=["tflite", "onnx"])
    # The registry names the int8 files by their upstream URLs (GitHub, Kaggle), unreachable here:
    # they come from the offline mirror, found by their pinned sha256.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POSEZOO_MIRROR", str(SHARED / "models" / "reference"))
        run([DVC, "repro"], root)
    return root


def _metrics(project: Path, kind: str) -> dict[str, dict]:
    shown = json.loads(run([DVC, "metrics", "show", "--json"], project))
    files = next(iter(shown.values()))["data"]
    return {Path(p).stem: e["data"] for p, e in files.items() if p.startswith(f"metrics/{kind}/")}


def test_dequantized_models_are_verified_against_the_int8_originals(project: Path) -> None:
    assert set(_metrics(project, "convert")) == set(MODELS)  # DVC sees the reports
    reports = {name: json.loads((project / "metrics" / "convert" / f"{name}.json").read_text()) for name in MODELS}
    for name, report in reports.items():
        assert report["source_format"] == "tflite-int8"
        (output,) = [o for o in report["dequantized"]["outputs"] if o["index"] == 0]
        assert output["ok"] and 0 < output["mean_steps"] <= output["tolerance_mean_steps"], name
        assert report["saved_model"]["max_abs_diff"] < 1e-3, name


def test_every_variant_has_coco_accuracy_float_and_int8(project: Path) -> None:
    evaluated = _metrics(project, "evaluate")
    assert len(evaluated) == 8
    for key, data in evaluated.items():
        coco = data["accuracy"]["shared_coco"]
        assert coco["schema"] == "coco17" and coco["float"]["instances"] == coco["int8"]["instances"] > 0
        assert coco["delta"]["coco_AP"] == pytest.approx(coco["int8"]["coco_AP"] - coco["float"]["coco_AP"])
        if key.startswith("movenet"):
            assert 0.3 < coco["float"]["mean_oks"] <= 1.0, key
        else:
            assert 0.3 < coco["float"]["coco_AP"] <= 1.0 and "mean_oks" not in coco["float"], key
            assert data["instances_matched"] > 0, key


def test_per_tensor_yolo_from_the_per_channel_release_keeps_accuracy(project: Path) -> None:
    """What a STM32MP2 user wants: a per-tensor YOLOv8n made from ST's per-channel file."""
    evaluated = _metrics(project, "evaluate")
    pt = evaluated["yolov8n_pose-per_tensor-tflite"]["accuracy"]["shared_coco"]
    assert pt["int8"]["coco_AP"] >= pt["float"]["coco_AP"] - 0.15
