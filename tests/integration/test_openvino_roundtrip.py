"""OpenVINO IR → ONNX on the real MediaPipe models: TFLite → IR (FP32 and FP16) → ONNX, judged on real crops.

The three landmark models come from the mediapipe wheel the registry pins (fetched through the
same cache as ``posezoo fetch``, so PyPI is needed only once). OpenVINO's own TFLite frontend
makes each IR (``openvino.convert_model`` + ``save_model``, FP32 and FP16-compressed weights);
the posezoo converter turns it into ONNX, and ``compare_models`` — the check ``posezoo convert``
runs — judges ONNX (onnxruntime) against the IR (OpenVINO CPU, f32 precision hint) on the
embedded calibration crops with params.yaml's tolerances and per-output overrides.

Each case prints its max |IR − ONNX| per output and the IR's op types (``pytest -s``), and
records them as test properties (``--junitxml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipeline.convert.openvino_to_onnx import MAPPINGS, STRUCTURAL, openvino_to_onnx
from pipeline.convert.runners import runner_for
from pipeline.convert.verify import compare_models, verify_settings
from pipeline.fetch import fetch
from pipeline.params import model_for

from tests.conftest import REPO

pytestmark = pytest.mark.slow
ov = pytest.importorskip("openvino")

MODELS = ["hand_landmark_full", "face_landmark", "pose_landmark_full"]
PARAMS = REPO / "params.yaml"


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return yaml.safe_load(PARAMS.read_text())


@pytest.fixture(scope="module")
def irs(tmp_path_factory: pytest.TempPathFactory, params: dict[str, Any]) -> dict[str, tuple[Path, Path]]:
    """model → (source TFLite, folder with model_fp32.xml / model_fp16.xml made by OpenVINO's TFLite frontend)."""
    out = {}
    for name in MODELS:
        spec, _ = model_for(params, name, PARAMS)
        tflite = fetch(spec.source)
        folder = tmp_path_factory.mktemp(name)
        model = ov.convert_model(str(tflite))
        ov.save_model(model, str(folder / "model_fp32.xml"), compress_to_fp16=False)
        ov.save_model(model, str(folder / "model_fp16.xml"), compress_to_fp16=True)
        out[name] = (tflite, folder)
    return out


@pytest.mark.parametrize("weights", ["fp32", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_ir_to_onnx_matches_the_ir_on_real_crops(name: str, weights: str, irs: dict[str, tuple[Path, Path]], params: dict[str, Any],
                                                 default_calibration: Path, record_property: Any) -> None:
    spec, _ = model_for(params, name, PARAMS)
    tflite, folder = irs[name]
    xml = folder / f"model_{weights}.xml"
    onnx_path = folder / f"model_{weights}.onnx"
    info = openvino_to_onnx(xml, onnx_path, int(params["convert"]["opset"]))
    atol, rtol, samples, overrides = verify_settings(params, name, PARAMS)
    check = compare_models(xml, onnx_path, default_calibration / "manifest.json", spec.input, atol, rtol, samples, overrides)
    assert check["samples"] == samples and all(o["ok"] for o in check["outputs"])
    diffs = [o["max_abs_diff"] for o in check["outputs"]]
    seen = {k: v for k, v in info["op_types"].items()}
    record_property("max_abs_diff", diffs)
    record_property("op_types", seen)
    print(f"\n{name} {weights}: max|IR-ONNX| per output {['%.3g' % d for d in diffs]} "
          f"(tolerances {['%.3g' % o['tolerance'] for o in check['outputs']]}); IR ops {seen}; "
          f"{info['folded_ops']} folded, {info['fused_conv_bias']} conv biases fused, {info['onnx_nodes']} ONNX nodes")
    assert set(seen) <= set(MAPPINGS) | set(STRUCTURAL)
    # The IR keeps the TFLite's NHWC input and its outputs in the TFLite's subgraph order.
    assert info["input"]["layout"] == "NHWC" and info["input"]["shape"] == [1, spec.input.height, spec.input.width, 3]
    x = np.random.default_rng(0).uniform(0, 1, (1, spec.input.height, spec.input.width, 3)).astype(np.float32)
    source_shapes = [o.size for o in runner_for(tflite, source_order=True)(x)]
    assert [o.size for o in runner_for(onnx_path)(x)] == source_shapes
