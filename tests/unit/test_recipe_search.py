"""Per-model recipe search: candidates from params, the contract kept, the best validation drift chosen and built."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import PosezooError
from pipeline.quantize.onnx import quantize_onnx
from pipeline.quantize.ranges import compute_ranges
from pipeline.quantize.recipe import candidates_for, chosen_recipe
from pipeline.quantize.search import exclusion
from pipeline.registry import load_model

from tests.conftest import TINY_SIZE
from tests.unit.test_quantize_methods import manifests, outlier  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.usefixtures("tiny_env")
P = Path("params.yaml")


def _params(candidates: list[Any] | None = None, override: dict[str, Any] | None = None, formats: tuple[str, ...] = ("onnx", "tflite"), stop: float = 0.0) -> dict[str, Any]:
    model: dict[str, Any] = {"resolution": TINY_SIZE}
    if override is not None:
        model["recipes"] = {"pt": override}
    quantize: dict[str, Any] = {"schemes": ["pc", "pt"], "formats": list(formats), "recipes": {"pc": {"weights": "per_channel"}, "pt": {"weights": "per_tensor", "bias_correction": True}}}
    if candidates is not None:
        quantize["search"] = {"stop_norm": stop, "candidates": {"pt": candidates}}
    return {"models": {"tiny_landmarks": model}, "convert": {"opset": 17, "atol": 1e-3, "rtol": 1e-4, "verify_samples": 4}, "quantize": quantize}


def test_candidates_change_the_recipe_and_an_override_wins() -> None:
    recipes, origin = candidates_for(_params([{}, {"equalize": True, "clip_headroom": 1.5}, {"calibration": "mse"}, {}]), "tiny_landmarks", "pt", P)
    assert origin == "search" and [r.describe() for r in recipes] == ["per_tensor, bc, minmax", "per_tensor, eq(headroom 1.5), bc, minmax", "per_tensor, bc, mse"]
    assert all(r.bias_correction and not r.per_channel for r in recipes)  # the scheme's recipe is the base
    recipes, origin = candidates_for(_params([{}, {"calibration": "mse"}], override={"bias_correction": False}), "tiny_landmarks", "pt", P)
    assert origin == "override" and len(recipes) == 1 and not recipes[0].bias_correction
    assert candidates_for(_params(), "tiny_landmarks", "pt", P)[1] == "scheme"
    assert candidates_for(_params([{}, {}]), "tiny_landmarks", "pt", P)[1] == "scheme"  # one distinct recipe: nothing to search


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (_params([{}, {"weights": "per_channel"}]), r"candidates.pt\[1\]: weights is the scheme's contract"),
        (_params([{}, {"activation_bits": 16}]), r"activation_bits is the scheme's contract"),
        (_params(override={"weights": "per_channel"}), r"models.tiny_landmarks.recipes.pt: weights is the scheme's contract"),
        (_params([{}, {"calibraton": "mse"}]), r"candidates.pt\[1\]: unknown key.*calibraton"),
        (_params([{}, "mse"]), r"a candidate is a mapping"),
        (_params({"calibration": "mse"}), r"must be a list of recipe changes"),
    ],
)
def test_bad_candidates_are_one_line_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(PosezooError, match=message) as err:
        candidates_for(params, "tiny_landmarks", "pt", P)
    assert "\n" not in str(err.value)


def _optimize(tmp_path: Path, float_dir: Path, manifests: Path, params: dict[str, Any], name: str) -> dict[str, Any]:  # noqa: F811
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params))
    common = ["--model", "tiny_landmarks", "--scheme", "pt", "--manifest", str(manifests / "manifest.json"), "--params", str(path)]
    out = tmp_path / name
    assert main(["optimize", *common, "--validation", str(manifests / "holdout.json"), "--float-dir", str(float_dir), "--out", str(out), "--report", str(tmp_path / f"{name}.json")]) == 0
    for fmt in ("onnx", "tflite"):
        assert main(["quantize", *common, "--format", fmt, "--float-dir", str(out), "--out-dir", str(tmp_path / f"{name}-{fmt}")]) == 0
    return json.loads((tmp_path / f"{name}.json").read_text())


@pytest.mark.slow
def test_search_builds_the_candidate_with_the_least_validation_drift(tmp_path: Path, outlier: Path, manifests: Path) -> None:  # noqa: F811
    """Both candidates are scored; the one drifting least (here the second: MinMax, 0.08 px against
    percentile's 0.10 px) is built in both formats, byte-identical to its recipe applied from scratch,
    and recorded in the sidecars."""
    params = _params([{"bias_correction": False, "calibration": "percentile"}, {"bias_correction": False}])
    report = _optimize(tmp_path, outlier, manifests, params, "s")
    rows = report["search"]["candidates"]
    assert [r["status"] for r in rows] == ["scored", "scored"]
    drifts = [r["validation_mean_px"] for r in rows]
    best = drifts.index(min(drifts))
    assert drifts[0] != drifts[1] and [bool(r.get("chosen")) for r in rows] == [i == best for i in range(2)]
    assert report["recipe"] == rows[best]["recipe"] and report["recipe_source"] == "search"
    assert report["search"]["validation"]["manifest"] == "holdout.json"
    recipe, origin = chosen_recipe(yaml.safe_load((tmp_path / "s.yaml").read_text()), "pt", tmp_path / "s", P)
    assert origin == "search" and recipe.as_params() == rows[best]["recipe"]
    spec = load_model("tiny_landmarks").input
    config = recipe.config()
    direct = tmp_path / "direct.onnx"
    table = compute_ranges(outlier / "model.onnx", manifests / "manifest.json", spec, config) if config.shared_ranges else None
    quantize_onnx(outlier / "model.onnx", direct, manifests / "manifest.json", spec, config, ranges=table)
    (built,) = (tmp_path / "s-onnx").glob("*.onnx")
    assert built.read_bytes() == direct.read_bytes()
    for fmt in ("onnx", "tflite"):
        (sidecar,) = (tmp_path / f"s-{fmt}").glob("*.quant.json")
        made = json.loads(sidecar.read_text())
        assert (made["calibration"], made["recipe_source"], made["recipe"]) == (config.calibration, "search", report["recipe"])


@pytest.mark.slow
def test_search_stops_within_noise(tmp_path: Path, outlier: Path, manifests: Path) -> None:  # noqa: F811
    first = [{"bias_correction": False}, {"bias_correction": False, "calibration": "percentile"}]
    rows = _optimize(tmp_path, outlier, manifests, _params(first, stop=1.0), "stop")["search"]["candidates"]
    assert [r["status"] for r in rows] == ["scored", "not run"] and rows[0]["chosen"]


def test_a_candidate_a_format_cannot_build_is_excluded() -> None:
    params = _params()
    params["quantize"]["recipes"]["a16"] = {"weights": "per_channel", "activation_bits": 16}
    params["quantize"]["schemes"].append("a16")
    a16 = candidates_for(params, "tiny_landmarks", "a16", P)[0][0]
    pt = candidates_for(_params([{}, {"calibration": "percentile"}]), "tiny_landmarks", "pt", P)[0]
    assert "activation_bits 16 is not an int8 OpenVINO IR" in (exclusion(a16, ["onnx", "openvino"]) or "")
    assert exclusion(a16, ["onnx", "tflite"]) is None
    assert [exclusion(r, ["openvino"]) for r in pt] == [None, None]  # percentile ranges are imposed on the IR


@pytest.mark.slow
def test_several_candidates_need_a_validation_manifest(tmp_path: Path, outlier: Path, manifests: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(_params([{}, {"calibration": "mse"}])))
    args = ["optimize", "--model", "tiny_landmarks", "--scheme", "pt", "--manifest", str(manifests / "manifest.json"), "--params", str(path), "--float-dir", str(outlier), "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.json")]
    assert main(args) == 2
    assert "pass --validation" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
