"""The Open Model Zoo path end to end, offline: `posezoo fetch` + `convert` + `evaluate` on an OMZ-style IR.

The real facial-landmarks-35-adas-0002 files are on storage.openvinotoolkit.org, which this
machine cannot reach. The test serves a stand-in under the same OMZ file names from a local HTTP
server: a 60×60 NCHW conv net with a (1, 70) output built with OpenVINO's opset API (the real
model's input and output contract), pinned by its real sha256 and size in a copy of the registry
entry whose URLs point at the server (``$POSEZOO_REGISTRY`` puts it before the built-in entry).
The CLI then runs as DVC would: fetch the .xml and its .bin, convert to ONNX + SavedModel
verified against the IR, and evaluate with the IR as the float reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipeline.registry import MODELS_DIR

from tests.conftest import REPO, photo_manifests
from tests.fetch.conftest import FileServer, server  # noqa: F401  (the local HTTP server fixture)

pytestmark = pytest.mark.slow
ov = pytest.importorskip("openvino")

NAME = "facial_landmarks_35_adas_0002"
OMZ = "/open_model_zoo/2021.4/models_bin/3/facial-landmarks-35-adas-0002/FP32/facial-landmarks-35-adas-0002"
POSEZOO = str(Path(sys.executable).parent / "posezoo")


def _omz_like_ir(folder: Path) -> Path:
    """A 60×60 BGR NCHW landmark regressor with the real model's (1, 70) output, as an FP32 IR."""
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)

    def w(*shape: int) -> Any:
        return ops.constant((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32))

    x = ops.parameter([1, 3, 60, 60], np.float32, name="data")
    y = ops.multiply(x, ops.constant(np.float32(1 / 255)))
    y = ops.prelu(ops.add(ops.convolution(y, w(16, 3, 3, 3), [2, 2], [1, 1], [1, 1], [1, 1]), w(1, 16, 1, 1)), ops.constant(np.full(16, 0.1, np.float32)))
    y = ops.max_pool(y, [2, 2], [1, 1], [0, 0], [0, 0], [3, 3], rounding_type="ceil").output(0)
    y = ops.relu(ops.add(ops.group_convolution(y, w(16, 1, 1, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1]), w(1, 16, 1, 1)))
    y = ops.reduce_mean(y, ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    y = ops.sigmoid(ops.add(ops.matmul(y, w(70, 16), False, True), w(70)))
    xml = folder / "facial-landmarks-35-adas-0002.xml"
    ov.save_model(ov.Model([ops.result(y)], [x], "facial-landmarks-35-adas-0002"), str(xml), compress_to_fp16=False)
    return xml


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([POSEZOO, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"posezoo {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_fetch_convert_evaluate_an_omz_ir(tmp_path: Path, server: FileServer, photo_folder: Path) -> None:  # noqa: F811
    xml = _omz_like_ir(tmp_path)
    data = {".xml": xml.read_bytes(), ".bin": xml.with_suffix(".bin").read_bytes()}
    for suffix, content in data.items():
        server.files[OMZ + suffix] = content
    entry = yaml.safe_load((MODELS_DIR / f"{NAME}.yaml").read_text())
    fp32 = next(s for s in entry["sources"] if s["id"] == "omz_fp32")
    fp32.update(url=server.url(OMZ + ".xml"), sha256=hashlib.sha256(data[".xml"]).hexdigest(), size=len(data[".xml"]))
    fp32["weights"].update(url=server.url(OMZ + ".bin"), sha256=hashlib.sha256(data[".bin"]).hexdigest(), size=len(data[".bin"]))
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / f"{NAME}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {NAME: {"resolution": 60}}
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    calibration = photo_manifests(tmp_path / "calibration", photo_folder, 12, 6)
    env = {**os.environ, "POSEZOO_REGISTRY": str(tmp_path / "registry"), "POSEZOO_CACHE": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    _cli(["fetch", "--model", NAME, "--out", f"build/source/{NAME}"], project, env)
    source = project / "build" / "source" / NAME
    assert sorted(p.name for p in source.iterdir()) == ["model.bin", "model.xml", "provenance.json"]
    assert (source / "model.bin").read_bytes() == data[".bin"]
    assert sorted(r.path for r in server.requests) == [OMZ + ".bin", OMZ + ".xml"]

    _cli(["convert", "--model", NAME, "--source-dir", f"build/source/{NAME}", "--manifest", str(calibration / "manifest.json"),
          "--out", f"build/float/{NAME}", "--report", f"metrics/convert/{NAME}.json"], project, env)
    report = json.loads((project / "metrics" / "convert" / f"{NAME}.json").read_text())
    assert report["source"] == "omz_fp32" and report["source_format"] == "openvino-ir"
    assert report["openvino_ir"]["input"] == {"name": "data", "shape": [1, 3, 60, 60], "layout": "NCHW"}
    assert report["openvino_ir"]["op_types"]["GroupConvolution"] == 1 and report["openvino_ir"]["fused_conv_bias"] == 2
    for key in ("onnx", "saved_model"):
        assert report[key]["outputs"][0]["shape"] == [1, 70] and report[key]["outputs"][0]["ok"], key
        assert report[key]["max_abs_diff"] < 1e-4, key
    assert report["samples"] == params["convert"]["verify_samples"]  # judged on that many crops, none skipped
    print(f"\nOMZ-style IR: max|IR-ONNX| {report['onnx']['max_abs_diff']:.3g}, max|IR-SavedModel| {report['saved_model']['max_abs_diff']:.3g}")
    import onnx

    graph = onnx.load(str(project / "build" / "float" / NAME / "model.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 60, 60]
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [1, 70]

    # Evaluate with the IR as the float reference; the candidate is the float ONNX itself, so the
    # drift is conversion error only (a fraction of a pixel would already be a bug).
    _cli(["evaluate", "--model", NAME, "--source-dir", f"build/source/{NAME}", "--int8", f"build/float/{NAME}/model.onnx",
          "--holdout", str(calibration / "holdout.json"), "--metrics", "metrics/evaluate/float_onnx.json"], project, env)
    metrics = json.loads((project / "metrics" / "evaluate" / "float_onnx.json").read_text())
    assert metrics["reference"] == "model.xml" and metrics["keypoints"] == 35 and metrics["samples"] == 6
    assert metrics["max_px"] < 1e-3
    print(f"evaluate, float ONNX against the IR: mean {metrics['mean_px']:.3g} px, max {metrics['max_px']:.3g} px")


def test_convert_refuses_an_ir_without_its_weights(tmp_path: Path, photo_folder: Path) -> None:
    """model.xml fetched without its .bin: one-line error naming the missing file, exit 2."""
    source = tmp_path / "source"
    source.mkdir()
    _omz_like_ir(tmp_path).rename(source / "model.xml")
    calibration = photo_manifests(tmp_path / "calibration", photo_folder, 4, 2)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {NAME: {"resolution": 60}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([POSEZOO, "convert", "--model", NAME, "--source-dir", str(source), "--manifest", str(calibration / "manifest.json"),
                           "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "float"), "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {source / 'model.bin'}: the IR's weights are missing beside model.xml; re-run `posezoo fetch` (the registry source needs a `weights:` entry)"
    assert not (tmp_path / "float").exists()
