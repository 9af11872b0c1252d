"""The model registry and the `posezoo` command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import STAGES, main
from pipeline.errors import PosezooError
from pipeline.params import model_for
from pipeline.registry import load_model, model_names

MEDIAPIPE = {
    "face_landmark": ("1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", 192, 468),
    "hand_landmark_full": ("11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3", 224, 21),
    "hand_landmark_lite": ("048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6", 224, 21),
    "pose_landmark_full": ("e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f", 256, 33),
}


def test_every_family_is_registered() -> None:
    names = set(model_names())
    assert set(MEDIAPIPE) | {"movenet_lightning", "movenet_thunder", "facial_landmarks_35_adas_0002", "yolov8n_pose"} <= names
    for name in names:
        spec = load_model(name)
        assert spec.source["kind"] in {"url", "pypi-wheel", "local"}
        assert isinstance(spec.keypoint_names, (list, str))


@pytest.mark.parametrize("name", sorted(MEDIAPIPE))
def test_mediapipe_entries_pin_the_wheel_members(name: str) -> None:
    sha, size, points = MEDIAPIPE[name]
    spec = load_model(name)
    assert spec.source["sha256"] == sha
    assert spec.source["wheel"] == "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert (spec.input.height, spec.input.width, spec.input.value_range, spec.input.color) == (size, size, (0.0, 1.0), "RGB")
    assert spec.keypoint_count == points


def test_openvino_entry_pins_both_ir_files() -> None:
    source = load_model("facial_landmarks_35_adas_0002").source
    assert (source["size"], source["weights"]["size"]) == (253710, 18381152)
    assert source["sha256"].startswith("6be69c76") and source["weights"]["sha256"].startswith("e1a32515")


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(PosezooError, match=r"unknown model 'nope'.*known models: .*face_landmark"):
        load_model("nope")


def test_invalid_registry_entry_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = yaml.safe_load((Path(load_model("face_landmark").path)).read_text())
    entry["name"] = "broken"
    entry["input"]["layout"] = "HWC"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(entry))
    monkeypatch.setenv("POSEZOO_REGISTRY", str(tmp_path))
    with pytest.raises(PosezooError, match=r"broken\.yaml: input\.layout is 'HWC'"):
        load_model("broken")


def test_old_accuracy_key_names_its_new_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = yaml.safe_load((Path(load_model("face_landmark").path)).read_text())
    entry["name"] = "old"
    entry["accuracy"]["crop_factor"] = entry["accuracy"].pop("box_scale")
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(entry))
    monkeypatch.setenv("POSEZOO_REGISTRY", str(tmp_path))
    with pytest.raises(PosezooError, match=r"old\.yaml: accuracy: 'crop_factor' is now called 'box_scale'"):
        load_model("old")


def test_resolution_outside_the_registry_is_rejected() -> None:
    params = {"models": {"face_landmark": {"resolution": 320}}}
    with pytest.raises(PosezooError, match=r"models\.face_landmark\.resolution is 320; face_landmark\.yaml lists \[192\] as valid"):
        model_for(params, "face_landmark")


def test_resolution_picks_the_source_that_gives_it() -> None:
    """ST publishes one YOLOv8n file per size: asking for 320 alone selects the 320 file."""
    spec, resolution = model_for({"models": {"yolov8n_pose": {"resolution": 320}}}, "yolov8n_pose")
    assert (resolution, spec.source["id"], spec.input.height, spec.input.width) == (320, "st_int8_320_pc", 320, 320)
    spec, _ = model_for({"models": {"yolov8n_pose": {}}}, "yolov8n_pose")
    assert (spec.source["id"], spec.input.height) == ("st_int8_256_pc", 256)


def test_source_that_cannot_give_the_resolution_is_rejected_early() -> None:
    params = {"models": {"yolov8n_pose": {"resolution": 192, "source": "st_int8_256_pt"}}}
    with pytest.raises(PosezooError, match=r"source 'st_int8_256_pt' of yolov8n_pose gives \[256\] px only, not 192; use models\.yolov8n_pose\.source .*st_int8_192_pc"):
        model_for(params, "yolov8n_pose")


def test_source_resolutions_must_be_listed_by_the_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = yaml.safe_load((Path(load_model("face_landmark").path)).read_text())
    entry["name"] = "wider"
    entry["sources"][0]["resolutions"] = [192, 256]
    (tmp_path / "wider.yaml").write_text(yaml.safe_dump(entry))
    monkeypatch.setenv("POSEZOO_REGISTRY", str(tmp_path))
    with pytest.raises(PosezooError, match=r"wider\.yaml: source 'mediapipe_wheel' lists resolutions \[256\]"):
        load_model("wider")


def test_cli_help_lists_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    """In-process (a subprocess per stage re-imports TensorFlow: over a minute for a help text)."""
    with pytest.raises(SystemExit, match="0"):
        main(["--help"])
    out = capsys.readouterr().out
    for stage in STAGES:
        assert stage in out
    for stage in STAGES:
        with pytest.raises(SystemExit, match="0"):
            main([stage, "--help"])
        assert f"posezoo {stage}" in capsys.readouterr().out


def test_unknown_model_in_params_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("models:\n  not_a_model: {resolution: 1}\n")
    code = main(["quantize", "--model", "not_a_model", "--scheme", "per_channel", "--format", "onnx", "--float-dir", str(tmp_path),
                 "--manifest", str(tmp_path / "m.json"), "--params", str(params), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: unknown model 'not_a_model'") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
