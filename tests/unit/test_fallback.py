"""Per-layer float fallback on the tiny model: its cost accounting and the search's stopping rules."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from pipeline.convert.tflite_to_onnx import tflite_to_onnx
from pipeline.quantize.config import QuantConfig, quantizable_layers
from pipeline.quantize.fallback import fallback_cost, search_fallback, weight_ranking
from pipeline.registry import load_model

from tests.conftest import TINY_SIZE, photo_manifests

pytestmark = pytest.mark.usefixtures("tiny_env")


@pytest.fixture(scope="module")
def float_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    path = tmp_path_factory.mktemp("float") / "model.onnx"
    tflite_to_onnx(tiny_model, path, opset=17)
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 12, 6) / "manifest.json"


def test_cost_counts_float_weights_and_the_footprint_macc(float_onnx: Path) -> None:
    layers = quantizable_layers(float_onnx)
    model = onnx.load(str(float_onnx))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    first = next(n for n in model.graph.node if n.name == layers[0])
    w = inits[first.input[1]]
    assert w.shape == (8, 3, 3, 3)  # the tiny model's first layer: Conv2D(8, 3, strides=2, padding="same")
    one = fallback_cost(float_onnx, [layers[0]])
    # 16x16 output positions x 8 channels x 3x3 kernel x 3 inputs, plus one bias add per channel
    assert one == {"float_layers": 1, "float_weights": w.size, "extra_weight_bytes": 3 * w.size, "float_macc": (TINY_SIZE // 2) ** 2 * 8 * 27 + 8}
    every = fallback_cost(float_onnx, layers)
    assert every["float_weights"] == sum(inits[n.input[1]].size for n in model.graph.node if n.name in layers)
    assert every["float_macc"] > one["float_macc"]


def test_ranking_puts_the_worst_quantized_weights_first(float_onnx: Path) -> None:
    ranking = weight_ranking(float_onnx, per_channel=False)
    assert sorted(n for n, _ in ranking) == sorted(quantizable_layers(float_onnx))
    assert [db for _, db in ranking] == sorted(db for _, db in ranking)


def test_search_stops_at_once_when_the_budget_is_met(float_onnx: Path, manifest: Path) -> None:
    spec = load_model("tiny_landmarks")
    report = search_fallback(float_onnx, manifest, spec, QuantConfig(False), QuantConfig(True), budget=1e6, max_layers=4, samples=4)
    assert report["met"] and report["float_nodes"] == [] and report["trials"] == []
    assert report["target_mean_px"] == pytest.approx(1e6 * report["reference_mean_px"])


def test_search_reports_an_unmet_budget_with_its_best_trial(float_onnx: Path, manifest: Path) -> None:
    spec = load_model("tiny_landmarks")
    report = search_fallback(float_onnx, manifest, spec, QuantConfig(False), QuantConfig(True), budget=0.0, max_layers=2, samples=4)
    assert not report["met"]
    assert [t["float_layers"] for t in report["trials"]] == [1, 2]
    best = min(report["trials"], key=lambda t: (t["mean_px"], t["float_layers"]))
    assert len(report["float_nodes"]) == best["float_layers"] and report["mean_px"] == best["mean_px"]
