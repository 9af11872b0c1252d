"""The Kaggle (MoveNet float16) and Ultralytics (YOLOv8n-pose .pt) sources end to end, offline.

Neither host is reachable from this machine, so each test serves a stand-in under the real
source's URL path from a local HTTP server and puts a copy of the real registry entry, with only
the host, pins and sizes changed, in ``$POSEZOO_REGISTRY`` (searched before the built-in entry).
The CLI then runs as DVC would.

- MoveNet: Kaggle serves a .tar.gz holding ``4.tflite``. The stand-in is a tiny float16 TFLite
  (fp16 weights behind DEQUANTIZE, as ``TFLiteConverter`` with ``supported_types=[tf.float16]``
  writes them) with MoveNet's contract: pixels 0–255, 1×192×192×3 in, (1, 1, 17, 3) y, x, score
  in [0, 1] out. fetch extracts and pins the member, convert dequantizes the fp16 weights and
  verifies the float ONNX and SavedModel against the file, then one int8 variant is built and
  evaluated against it. The pixels are float32 here; TF's MoveNet tutorial feeds the float16
  release uint8 pixels, which ``posezoo convert`` does not handle yet (onnxruntime is fed floats).
- YOLOv8n-pose: the .pt is fetched and sha256-verified like any URL source (a corrupted download
  is refused), and ``posezoo convert`` refuses the PyTorch source with a one-line error naming the
  ST int8 sources to use instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml

from pipeline.registry import MODELS_DIR

from tests.conftest import REPO, photo_manifests
from tests.fetch.conftest import FileServer, server  # noqa: F401  (the local HTTP server fixture)

POSEZOO = str(Path(sys.executable).parent / "posezoo")
MOVENET = "movenet_lightning"
YOLO = "yolov8n_pose"


def _movenet_like_float16(path: Path, pixels: str = "float32") -> Path:
    """A tiny MoveNet-shaped TFLite: 192×192 RGB pixels 0–255 (float32 or uint8) in, (1, 1, 17, 3) sigmoid out, float16 weights."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def w(*shape: int) -> tf.Tensor:
        return tf.constant((rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32))

    k1, k2, k3, k4 = w(3, 3, 3, 8), w(3, 3, 8, 1), w(1, 1, 8, 16), w(16, 51)
    b4 = tf.constant((rng.standard_normal(51) * 0.1).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 192, 192, 3], tf.as_dtype(pixels), name="input")])
    def net(image: tf.Tensor) -> tf.Tensor:
        x = tf.cast(image, tf.float32) * (1 / 255)
        x = tf.nn.relu(tf.nn.conv2d(x, k1, 4, "SAME"))
        x = tf.nn.relu(tf.nn.depthwise_conv2d(x, k2, [1, 1, 1, 1], "SAME"))
        x = tf.nn.relu(tf.nn.conv2d(x, k3, 1, "VALID"))
        x = tf.reduce_mean(x, axis=[1, 2])
        return tf.reshape(tf.sigmoid(tf.matmul(x, k4) + b4), [1, 1, 17, 3])

    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    path.write_bytes(converter.convert())
    return path


def _tar_gz(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _registry_copy(tmp_path: Path, name: str, source_id: str, **changes: object) -> dict[str, Any]:
    """The built-in entry ``name`` with ``changes`` applied to one source, written to tmp_path/registry."""
    entry = yaml.safe_load((MODELS_DIR / f"{name}.yaml").read_text())
    source = next(s for s in entry["sources"] if s["id"] == source_id)
    source.update(changes)
    (tmp_path / "registry").mkdir(exist_ok=True)
    (tmp_path / "registry" / f"{name}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    return source


def _project(tmp_path: Path, models: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = models
    params["quantize"]["search"]["candidates"] = {}  # each scheme's own recipe: this tests the fetch / convert path
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "POSEZOO_REGISTRY": str(tmp_path / "registry"), "POSEZOO_CACHE": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return project, env


def _cli(args: list[str], cwd: Path, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([POSEZOO, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == code, f"posezoo {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow  # ~18 s on 2 cores: tiny model, but fetch + convert + optimize + quantize + evaluate
def test_movenet_from_a_kaggle_archive(tmp_path: Path, server: FileServer, photo_folder: Path) -> None:  # noqa: F811
    builtin = next(s for s in yaml.safe_load((MODELS_DIR / f"{MOVENET}.yaml").read_text())["sources"] if s["id"] == "kaggle_float16")
    assert builtin["member"] == "4.tflite" and builtin["sha256"] == ""  # pinned on first real download
    url_path = urlsplit(builtin["url"]).path  # /api/v1/models/google/movenet/tfLite/.../download
    model = _movenet_like_float16(tmp_path / "4.tflite").read_bytes()
    archive = _tar_gz("4.tflite", model)
    server.files[url_path] = archive
    _registry_copy(tmp_path, MOVENET, "kaggle_float16", url=server.url(url_path), sha256=hashlib.sha256(model).hexdigest(), size=len(model),
                   archive_sha256=hashlib.sha256(archive).hexdigest())
    project, env = _project(tmp_path, {MOVENET: {"resolution": 192}})  # no `source`: the registry's default
    calibration = photo_manifests(tmp_path / "calibration", photo_folder, 12, 6)
    source_dir = f"build/source/{MOVENET}"

    _cli(["fetch", "--model", MOVENET, "--out", source_dir], project, env)
    assert sorted(p.name for p in (project / source_dir).iterdir()) == ["model.tflite", "provenance.json"]
    assert (project / source_dir / "model.tflite").read_bytes() == model
    provenance = json.loads((project / source_dir / "provenance.json").read_text())
    assert provenance["source"]["id"] == "kaggle_float16" and provenance["files"]["model.tflite"]["sha256"] == hashlib.sha256(model).hexdigest()
    assert [r.path for r in server.requests] == [url_path]
    _cli(["fetch", "--model", MOVENET, "--out", "again"], project, env)  # the member is cached: no second download
    assert len(server.requests) == 1

    from ai_edge_litert.interpreter import Interpreter

    fp16 = [t for t in Interpreter(model_path=str(project / source_dir / "model.tflite")).get_tensor_details() if t["dtype"] == np.float16]
    assert len(fp16) >= 4  # the stand-in really stores its weights as float16

    _cli(["convert", "--model", MOVENET, "--source-dir", source_dir, "--manifest", str(calibration / "manifest.json"),
          "--out", f"build/float/{MOVENET}", "--report", "convert.json"], project, env)
    report = json.loads((project / "convert.json").read_text())
    assert report["source"] == "kaggle_float16" and report["source_format"] == "tflite"
    for key in ("onnx", "saved_model"):
        (output,) = report[key]["outputs"]
        assert output["shape"] == [1, 1, 17, 3] and output["ok"], key
        assert report[key]["max_abs_diff"] < 1e-4, key  # fp16 weights dequantized exactly: float32 rounding only
    import onnx

    graph = onnx.load(str(project / "build" / "float" / MOVENET / "model.onnx")).graph
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    print(f"\nKaggle float16 stand-in: max|TFLite-ONNX| {report['onnx']['max_abs_diff']:.3g}, max|TFLite-SavedModel| {report['saved_model']['max_abs_diff']:.3g}")

    # One int8 variant, judged against the float16 source on the held-out crops.
    params = ["--params", "params.yaml", "--model", MOVENET]
    manifest = ["--manifest", str(calibration / "manifest.json")]
    _cli(["optimize", *params, *manifest, "--scheme", "per_channel", "--float-dir", f"build/float/{MOVENET}", "--out", "opt", "--report", "opt.json"], project, env)
    _cli(["quantize", *params, *manifest, "--scheme", "per_channel", "--format", "tflite", "--float-dir", "opt", "--out-dir", "int8"], project, env)
    (int8,) = (project / "int8").glob("*.tflite")
    assert int8.name == f"{MOVENET}_192_int8_pc.tflite"
    _cli(["evaluate", *params, "--source-dir", source_dir, "--float-dir", f"build/float/{MOVENET}", "--int8", "int8",
          "--holdout", str(calibration / "holdout.json"), "--metrics", "evaluate.json"], project, env)
    metrics = json.loads((project / "evaluate.json").read_text())
    assert metrics["reference"] == "model.tflite" and metrics["keypoints"] == 17 and metrics["samples"] == 6
    assert 0 < metrics["mean_px"] < 0.05 * 192 and np.isfinite(metrics["max_px"])  # int8 error, not noise
    print(f"int8 per-channel TFLite against the float16 source: mean {metrics['mean_px']:.3g} px, max {metrics['max_px']:.3g} px")


def _pt_stand_in() -> bytes:
    """A small zip laid out like a torch checkpoint (``torch.save`` writes a zip): bytes to pin, never loaded."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("yolov8n-pose/data.pkl", b"stand-in for the Ultralytics checkpoint " * 64)
        archive.writestr("yolov8n-pose/version", b"3\n")
    return buffer.getvalue()


@pytest.mark.slow  # three posezoo subprocesses, each importing TensorFlow: 4-15 s
def test_yolov8n_pose_checkpoint_is_fetched_verified_and_refused_by_convert(tmp_path: Path, server: FileServer, photo_folder: Path) -> None:  # noqa: F811
    builtin = next(s for s in yaml.safe_load((MODELS_DIR / f"{YOLO}.yaml").read_text())["sources"] if s["id"] == "ultralytics_pt")
    url_path = urlsplit(builtin["url"]).path
    assert url_path.endswith("/yolov8n-pose.pt")
    checkpoint = _pt_stand_in()
    server.files[url_path] = b"X" + checkpoint[1:]  # first served corrupted: same size, other digest
    _registry_copy(tmp_path, YOLO, "ultralytics_pt", url=server.url(url_path), sha256=hashlib.sha256(checkpoint).hexdigest(), size=len(checkpoint))
    project, env = _project(tmp_path, {YOLO: {"resolution": 256, "source": "ultralytics_pt"}})
    out = f"build/source/{YOLO}"

    proc = _cli(["fetch", "--model", YOLO, "--out", out], project, env, code=2)
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and "sha256" in line and server.url(url_path) in line
    assert not (project / out).exists()

    server.files[url_path] = checkpoint
    _cli(["fetch", "--model", YOLO, "--out", out], project, env)
    assert sorted(p.name for p in (project / out).iterdir()) == ["model.pt", "provenance.json"]
    assert (project / out / "model.pt").read_bytes() == checkpoint
    provenance = json.loads((project / out / "provenance.json").read_text())
    assert provenance["source"]["id"] == "ultralytics_pt" and provenance["files"]["model.pt"]["sha256"] == hashlib.sha256(checkpoint).hexdigest()

    calibration = photo_manifests(tmp_path / "calibration", photo_folder, 4, 2)
    proc = _cli(["convert", "--model", YOLO, "--source-dir", out, "--manifest", str(calibration / "manifest.json"),
                 "--out", f"build/float/{YOLO}", "--report", "convert.json"], project, env, code=2)
    registry_file = tmp_path / "registry" / f"{YOLO}.yaml"
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {registry_file}: source 'ultralytics_pt' is a PyTorch checkpoint and the PyTorch export path is not available here; "
        "use a published int8 source instead (models.yolov8n_pose.source: st_int8_256_pc or st_int8_256_pt in params.yaml)"
    )
    assert not (project / "build" / "float").exists() and not (project / "convert.json").exists()
