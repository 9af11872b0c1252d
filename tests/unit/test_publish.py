"""DVC model artifacts derived from params.yaml, and the checks `posezoo publish` makes before pushing."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import PosezooError
from pipeline.publish.artifacts import ARTIFACTS_FILE, expected_artifacts, stale_artifacts, sync_artifacts
from pipeline.publish.push import publish

from tests.conftest import REPO

DVC = str(Path(sys.executable).parent / "dvc")


def _params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_the_repository_declares_one_artifact_per_int8_variant() -> None:
    """artifacts/dvc.yaml's literal artifacts section must match params.yaml (DVC cannot template
    it), and the pipeline's dvc.yaml has none (DVC would read both)."""
    params = _params()
    assert stale_artifacts(REPO / ARTIFACTS_FILE, params, REPO / "params.yaml") == []
    assert "artifacts" not in yaml.safe_load((REPO / "dvc.yaml").read_text())
    artifacts = yaml.safe_load((REPO / ARTIFACTS_FILE).read_text())["artifacts"]
    expected = {f"{m}-{s}-{f}" for m in params["models"] for s in params["quantize"]["schemes"] for f in params["quantize"]["formats"]}
    assert {a["path"].removeprefix("../build/int8/") for a in artifacts.values()} == expected
    from gto.constants import assert_name_is_valid

    for name, entry in artifacts.items():
        assert_name_is_valid(name)
        assert entry["type"] == "model" and entry["meta"]["resolution"] in (192, 224, 256)


def test_sync_writes_the_artifacts_file_dvc_reads(tmp_path: Path) -> None:
    """The generated file is what DVC's own reader sees: names ``artifacts:<name>``, paths from the root."""
    from dvc.repo import Repo

    root = _project(tmp_path, with_artifacts=False)
    params = copy.deepcopy(_params())
    params["quantize"]["schemes"] = ["per_channel", "per_tensor", "a16w8"]
    expected = expected_artifacts(params, REPO / "params.yaml")
    assert sync_artifacts(root / ARTIFACTS_FILE, params, REPO / "params.yaml") == sorted(expected)
    assert (root / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()  # the pipeline untouched
    assert stale_artifacts(root / ARTIFACTS_FILE, params, REPO / "params.yaml") == []
    assert sync_artifacts(root / ARTIFACTS_FILE, params, REPO / "params.yaml") == []
    with Repo(str(root)) as repo:
        assert list(repo.artifacts.read()) == [ARTIFACTS_FILE.as_posix()]
        assert set(repo.artifacts.read()[ARTIFACTS_FILE.as_posix()]) == set(expected)
        assert repo.artifacts.get_path("artifacts:hand-landmark-full-a16w8-onnx") == "build/int8/hand_landmark_full-a16w8-onnx"


def _project(root: Path, with_artifacts: bool = True, with_stale_artifact: bool = False) -> Path:
    """A DVC project with the real params/dvc.yaml (and artifacts/dvc.yaml) but no outputs yet."""
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (root / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    if with_artifacts:
        text = (REPO / ARTIFACTS_FILE).read_text()
        if with_stale_artifact:
            text = text.replace("build/int8/face_landmark-per_channel-tflite", "build/int8/elsewhere", 1)
        (root / ARTIFACTS_FILE).parent.mkdir()
        (root / ARTIFACTS_FILE).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True)
    return root


def test_publish_refuses_a_stale_artifacts_section(tmp_path: Path) -> None:
    root = _project(tmp_path, with_stale_artifact=True)
    with pytest.raises(PosezooError, match=r"artifacts/dvc\.yaml: artifacts out of date with params\.yaml \(face-landmark-per-channel-tflite\); run `posezoo publish --sync-artifacts` and commit artifacts/dvc\.yaml"):
        publish(root, None)


def test_publish_without_a_remote_says_how_to_add_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path)
    assert main(["publish", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no DVC remote configured; add one with `dvc remote add -d zoo" in err


def test_publish_refuses_outputs_that_differ_from_dvc_lock(tmp_path: Path) -> None:
    root = _project(tmp_path)
    subprocess.run([DVC, "remote", "add", "-d", "zoo", str(tmp_path / "remote")], cwd=root, check=True)
    with pytest.raises(PosezooError, match=r"stage\(s\) differ from dvc\.lock .*run `dvc repro` before publishing"):
        publish(root, None)


def test_a_version_is_only_registered_for_committed_pipeline_files(tmp_path: Path) -> None:
    """The version tag must describe the published outputs: uncommitted dvc.lock / dvc.yaml / params / artifacts are refused."""
    root = _project(tmp_path)
    with pytest.raises(PosezooError, match=r"artifacts/dvc\.yaml, dvc\.yaml, params\.yaml differ from git HEAD; commit them before publishing version v1\.0\.0"):
        publish(root, None, "v1.0.0")
