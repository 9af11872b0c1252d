"""Int8 bytes do not depend on the machine or the process: two fresh processes, same bytes.

A fresh clone on another machine must rebuild the committed int8 files byte for byte. This test
rebuilds a real MediaPipe model's per-channel exports — TFLite MinMax (the converter's own
calibration), TFLite percentile (shared ranges from onnxruntime's calibrator, imposed through
TFLite → ONNX tensor matching, unmatched tensors ranged on the TFLite graph) and ONNX MinMax
(``quantize_static``'s calibrator) — in two fresh subprocesses whose environments differ in what
varies between machines and runs: hash seed, thread counts (OpenMP, TensorFlow intra/inter-op,
CPU affinity), working and temporary directories, and the core count onnxruntime sees: its
sessions opened with default options (its calibrators') get 8 threads in one process, as on an
8-core machine (a ``sitecustomize`` sets them; onnxruntime reads no variable for it). Both
processes must write the same bytes, and TensorFlow must give the same float SavedModel outputs
(the convert stage's verification figures; its thread pools are fixed by :mod:`pipeline.threads`).

pose_landmark_full is the model whose per-channel TFLite file did not reproduce on another
machine, and the one whose TFLite graph has tensors with no ONNX counterpart (onnx2tf's explicit
Pads, ranged on the TFLite float graph). Its source comes from the pinned mediapipe wheel through
the fetch cache (PyPI once); 12 generated test photos calibrate it, which keeps the test near 2 min.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.convert.onnx_to_savedmodel import onnx_to_savedmodel
from pipeline.convert.tflite_to_onnx import tflite_to_onnx
from pipeline.fetch import fetch
from pipeline.params import model_for
from tests.conftest import REPO, photo_manifests

pytestmark = pytest.mark.slow

MODEL = "pose_landmark_full"
PARAMS = REPO / "params.yaml"
#: The child's exports: file name -> QuantConfig arguments (the suffix picks the exporter).
EXPORTS = {
    "minmax.tflite": {"per_channel": True},
    "percentile.tflite": {"per_channel": True, "calibration": "percentile"},
    "minmax.onnx": {"per_channel": True},
}
#: name -> (variables, pinned to one core?, threads of onnxruntime's default sessions or None).
ENVIRONMENTS = {
    "one-core": ({"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}, True, None),
    "eight-cores": ({"PYTHONHASHSEED": "4242"}, False, 8),
}
#: The child's file of the float SavedModel's output bytes (TensorFlow's runtime, not an export).
SAVED_MODEL_OUTPUTS = "saved_model_outputs.bin"
THREAD_VARIABLES = ("PYTHONHASHSEED", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")

#: The child: shared ranges as `posezoo optimize` computes them, then the exports as `posezoo quantize` writes them.
CHILD = """
import json, sys
from pathlib import Path
from pipeline.params import load_params, model_for
from pipeline.quantize import QuantConfig
from pipeline.quantize.onnx import quantize_onnx
from pipeline.quantize.ranges import compute_ranges
from pipeline.quantize.tflite import quantize_tflite

float_dir, manifest, out, params, model, exports = sys.argv[1:7]
float_dir, manifest, out = Path(float_dir), Path(manifest), Path(out)
spec, _ = model_for(load_params(Path(params)), model, Path(params))
for name, arguments in json.loads(exports).items():
    config = QuantConfig(**arguments)
    table = compute_ranges(float_dir / "model.onnx", manifest, spec.input, config) if config.shared_ranges else None
    if name.endswith(".tflite"):
        quantize_tflite(float_dir / "saved_model", out / name, manifest, spec.input, config, float_onnx=float_dir / "model.onnx", ranges=table)
    else:
        quantize_onnx(float_dir / "model.onnx", out / name, manifest, spec.input, config, ranges=table)
# the float SavedModel's outputs on one calibration input: what the convert / optimize stages verify
from pipeline.calibration.reader import iter_inputs
from pipeline.convert.runners import savedmodel_runner
_, x = next(iter(iter_inputs(manifest, spec.input, "NHWC")))
(out / SAVED_MODEL_OUTPUTS).write_bytes(b"".join(y.tobytes() for y in savedmodel_runner(float_dir / "saved_model")(x)))
"""

#: Gives onnxruntime sessions opened with default options ``THREADS`` threads, as on a machine with that many cores.
CORES = """
import onnxruntime

_Session = onnxruntime.InferenceSession


class _Cores(_Session):
    def __init__(self, model, sess_options=None, *args, **kwargs):
        sess_options = sess_options or onnxruntime.SessionOptions()
        if sess_options.intra_op_num_threads == 0:
            sess_options.intra_op_num_threads = THREADS
        super().__init__(model, sess_options, *args, **kwargs)


onnxruntime.InferenceSession = _Cores
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> tuple[Path, Path]:
    """(float dir with model.onnx + saved_model/ of the real model, calibration manifest)."""
    params = yaml.safe_load(PARAMS.read_text())
    spec, _ = model_for(params, MODEL, PARAMS)
    root = tmp_path_factory.mktemp("cross-env")
    manifests = photo_manifests(root / "calibration", photo_folder, 12, 6)
    float_dir = root / "float"
    float_dir.mkdir()
    tflite_to_onnx(fetch(spec.source), float_dir / "model.onnx", int(params["convert"]["opset"]))
    onnx_to_savedmodel(float_dir / "model.onnx", float_dir / "saved_model", manifests / "manifest.json")
    return float_dir, manifests / "manifest.json"


def _export(name: str, prepared: tuple[Path, Path], root: Path) -> dict[str, str]:
    """sha256 of each export written by a fresh process in environment ``name``."""
    variables, one_core, ort_threads = ENVIRONMENTS[name]
    float_dir, manifest = prepared
    work, tmp, out, site = (root / name / part for part in ("cwd", "tmp", "out", "site"))
    for folder in (work, tmp, out, site):
        folder.mkdir(parents=True)
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    if ort_threads is not None:
        (site / "sitecustomize.py").write_text(CORES.replace("THREADS", str(ort_threads)))
        paths.insert(0, str(site))
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env |= {**variables, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.replace("SAVED_MODEL_OUTPUTS", repr(SAVED_MODEL_OUTPUTS)), str(float_dir), str(manifest), str(out), str(PARAMS), MODEL, json.dumps(EXPORTS)],
        cwd=work, env=env, capture_output=True, text=True, preexec_fn=(lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if one_core else None,
    )
    assert proc.returncode == 0, f"{name}: export failed:\n{proc.stderr[-3000:]}"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_int8_bytes_do_not_depend_on_the_machine_or_process(prepared: tuple[Path, Path], tmp_path: Path) -> None:
    hashes = {name: _export(name, prepared, tmp_path) for name in ENVIRONMENTS}
    first, second = hashes.values()
    assert set(first) == set(EXPORTS) | {SAVED_MODEL_OUTPUTS}
    assert first == second, f"int8 bytes (or the float SavedModel's outputs) differ between environments: {hashes}"
