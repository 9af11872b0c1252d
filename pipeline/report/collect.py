"""Read one run's params, metrics and variant files into a typed record per model.

This is the only module of ``pipeline.report`` that touches the file system for inputs; the
renderers (card, index, plots) get a :class:`~pipeline.report.records.ModelRecord` and never look anything up, so a card
cannot show a figure that no metrics file holds.

What is *required* and what is *optional* follows the pipeline: every file a stage of the current
params writes (convert, optimize, quantize, evaluate, footprint, recommend) must be there — a
missing one is a pipeline bug and a one-line :class:`PosezooError` naming it. Host latency
(``metrics/benchmark``) is optional: the card says "not measured" without it, as it does for a
ground-truth dataset a model has no keypoint map for.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.errors import PosezooError
from pipeline.footprint.targets import TARGETS_FILE
from pipeline.formats import named, variant_format
from pipeline.params import get, load_params, model_for
from pipeline.quantize import expected_variants, variant_key
from pipeline.quantize.sidecar import QUANT_SIDECAR, sidecar_path
from pipeline.report.model_io import read_io
from pipeline.report.records import (
    Benchmark,
    Drift,
    Export,
    FileDigest,
    Footprint,
    GroundTruth,
    ModelRecord,
    OutputInfo,
    Recommendation,
    RuntimeLatency,
    TargetFit,
    Variant,
)


class _Reader:
    """Reads input files and remembers (logical name, sha256) of each for the inputs digest."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def bytes(self, path: Path, logical: str) -> bytes:
        data = path.read_bytes()
        self.seen[logical] = hashlib.sha256(data).hexdigest()
        return data

    def json(self, path: Path, logical: str, required_by: str) -> dict[str, Any]:
        if not path.is_file():
            raise PosezooError(f"{path}: missing ({required_by} writes it for the current params); run `dvc repro` first")
        try:
            doc = json.loads(self.bytes(path, logical))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PosezooError(f"{path}: not valid JSON ({err}); re-run `dvc repro` to rewrite it") from err
        if not isinstance(doc, dict):
            raise PosezooError(f"{path}: expected a JSON object; re-run `dvc repro` to rewrite it")
        return doc

    def digest(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.seen):
            h.update(f"{name}\0{self.seen[name]}\n".encode())
        return h.hexdigest()


def _field(doc: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in doc:
        raise PosezooError(f"{path}: no '{key}' field; the file predates the current pipeline, re-run `dvc repro`")
    return doc[key]


def footprint_from(doc: Mapping[str, Any], path: Path) -> Footprint:
    targets = tuple(
        TargetFit(name, bool(t.get("fits")), t.get("ram_headroom_bytes"), t.get("flash_headroom_bytes"))
        for name, t in sorted(_field(doc, "targets", path).items())
    )
    kind = named(doc.get("format"))
    if kind is not None and not kind.estimated:  # sizes only: see pipeline.footprint.loader.openvino_ir_sizes
        return Footprint(None, int(_field(doc, "weights_bytes", path)), None, None, targets)
    return Footprint(
        macc=int(_field(doc, "macc", path)),
        weights_bytes=int(_field(doc, "weights_bytes", path)),
        flash_bytes=int(_field(doc, "flash_bytes", path)),
        activations_plan_bytes=int(_field(doc, "activations_plan_bytes", path)),
        targets=targets,
    )


def benchmark_from(doc: Mapping[str, Any], path: Path) -> Benchmark:
    runtimes = _field(doc, "runtimes", path)
    if not isinstance(runtimes, dict):
        raise PosezooError(f"{path}: 'runtimes' must be an object of runtime id → timing; re-run the benchmark stage")
    rows = []
    for rid in sorted(runtimes):
        r = runtimes[rid]
        rows.append(
            RuntimeLatency(
                runtime=rid,
                file=str(r.get("file", "")),
                median_ms=r.get("median_ms"),
                p90_ms=r.get("p90_ms"),
                min_ms=r.get("min_ms"),
                runs=r.get("runs"),
                versions=r.get("versions"),
                error=r.get("error") if "median_ms" not in r else None,
            )
        )
    return Benchmark(key=str(doc.get("key", path.stem)), host=doc.get("host") or {}, runtimes=tuple(rows), fastest=doc.get("fastest"))


def drift_from(doc: Mapping[str, Any], path: Path) -> Drift:
    return Drift(
        **{k: float(_field(doc, k, path)) for k in ("mean_px", "p95_px", "max_px", "mean_norm", "p95_norm", "max_norm", "within_2pct", "input_size_px")},
        samples=int(_field(doc, "samples", path)),
        holdout=str((doc.get("holdout") or {}).get("note", "")),
    )


def _variant_files(folder: Path, key: str, fmt: str, reader: _Reader) -> tuple[str, tuple[FileDigest, ...]]:
    """The model file of ``build/int8/<key>/`` (a ``fmt`` variant) and the files it consists of.

    The folder holds one model file and its companions (an OpenVINO IR's ``.bin`` beside its
    ``.xml``) besides ``*.quant.json``; all are published, so all are sized and hashed.
    """
    if not folder.is_dir():
        raise PosezooError(f"{folder}: missing (the quantize stage writes it for variant {key}); run `dvc repro` first")
    kind = variant_format(fmt)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(QUANT_SIDECAR))
    models = [p for p in files if p.suffix.lower() == kind.suffix]
    parts = kind.files(models[0]) if len(models) == 1 else []
    if not parts or sorted(parts) != files:
        wanted = " + ".join(p.name for p in parts) or f"a {kind.suffix} file" + "".join(f" + its {c.suffix}" for c in kind.companions)
        raise PosezooError(f"{folder}: expected one model file ({kind.label}: {wanted}) besides *{QUANT_SIDECAR}, found {[p.name for p in files] or 'none'}; re-run the quantize stage")
    digests = tuple(FileDigest(p.name, p, p.stat().st_size, _hash_into(reader, p, f"int8/{key}/{p.name}")) for p in parts)
    return parts[0].name, digests


def _hash_into(reader: _Reader, path: Path, logical: str) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    reader.seen[logical] = h.hexdigest()
    return reader.seen[logical]


def _optional_benchmark(metrics: Path, key: str, reader: _Reader) -> Benchmark | None:
    path = metrics / "benchmark" / f"{key}.json"
    if not path.is_file():
        return None
    return benchmark_from(reader.json(path, f"metrics/benchmark/{key}.json", "the benchmark stage"), path)


def _checked(bench: Benchmark | None, names: set[str], path: Path) -> Benchmark | None:
    """A benchmark that timed other files than the variant's is stale: refuse it rather than print it."""
    timed = {r.file for r in (bench.runtimes if bench else ()) if r.file}
    if bench is not None and timed and not timed & names:
        raise PosezooError(f"{path}: times {sorted(timed)} but the variant is {sorted(names)}; the metrics are stale, re-run `dvc repro`")
    return bench


def _variant(model: str, scheme: str, fmt: str, metrics: Path, int8_dir: Path, reader: _Reader) -> Variant:
    key = variant_key(model, scheme, fmt)
    file, files = _variant_files(int8_dir / key, key, fmt, reader)
    ev_path = metrics / "evaluate" / f"{key}.json"
    ev = reader.json(ev_path, f"metrics/evaluate/{key}.json", f"the evaluate stage (evaluate@{key})")
    if ev.get("variant") != file:
        raise PosezooError(f"{ev_path}: evaluates '{ev.get('variant')}' but {int8_dir / key} holds '{file}'; the metrics are stale, re-run `dvc repro`")
    fp_path = metrics / "footprint" / f"{key}.json"
    fp = reader.json(fp_path, f"metrics/footprint/{key}.json", f"the footprint stage (footprint@{key})")
    names = {f.name for f in files}
    if "model" in fp and fp["model"] not in names:
        raise PosezooError(f"{fp_path}: measures '{fp['model']}' but {int8_dir / key} holds '{file}'; the metrics are stale, re-run `dvc repro`")
    opt_path = metrics / "optimize" / f"{model}-{scheme}.json"
    opt = reader.json(opt_path, f"metrics/optimize/{model}-{scheme}.json", f"the optimize stage (optimize@{model}-{scheme})")
    quant_path = sidecar_path(int8_dir / key / file)
    quantization = ev.get("quantization")
    if quantization is None and quant_path.is_file():
        quantization = reader.json(quant_path, f"int8/{key}/{quant_path.name}", "the quantize stage")
    if not isinstance(quantization, dict):
        raise PosezooError(f"{ev_path}: no 'quantization' block and no {quant_path.name}; re-run `dvc repro`")
    bc = opt.get("bias_correction_report")
    accuracy = tuple(
        GroundTruth(name, str(a.get("schema", "")), str(a.get("task", "")), a.get("float") or {}, a.get("int8") or {}, a.get("delta") or {}, str(a.get("protocol", "box")))
        for name, a in sorted((ev.get("accuracy") or {}).items())
    )
    model_file = int8_dir / key / file
    return Variant(
        key=key,
        scheme=scheme,
        format=fmt,
        file=file,
        files=files,
        quantization=quantization,
        bias_corrected_layers=int(bc["layers_corrected"]) if isinstance(bc, dict) and "layers_corrected" in bc else None,
        search=opt.get("search") if isinstance(opt.get("search"), Mapping) else None,
        drift=drift_from(ev, ev_path),
        off_subject=drift_from(ev["off_subject"], ev_path) if isinstance(ev.get("off_subject"), Mapping) else None,
        accuracy=accuracy,
        footprint=footprint_from(fp, fp_path),
        benchmark=_checked(_optional_benchmark(metrics, key, reader), names, metrics / "benchmark" / f"{key}.json"),
        io=read_io(model_file),
    )


def _recommendations(doc: Mapping[str, Any], path: Path) -> tuple[Recommendation, ...]:
    out = []
    for target, t in sorted(_field(doc, "targets", path).items()):
        out.append(
            Recommendation(
                target=target,
                constraint=str(t.get("constraint", "")),
                recommended=t.get("recommended"),
                recommended_mean_px=t.get("recommended_mean_px"),
                eligible=tuple(c["variant"] for c in t.get("candidates", []) if c.get("eligible")),
            )
        )
    return tuple(out)


def _exports(doc: Mapping[str, Any]) -> tuple[Export, ...]:
    exports = []
    for name in ("onnx", "saved_model"):
        e = doc.get(name)
        if isinstance(e, dict) and "max_abs_diff" in e:
            ok = all(o.get("ok", False) for o in e.get("outputs", [])) if e.get("outputs") else bool(e.get("ok", True))
            exports.append(Export(name, float(e["max_abs_diff"]), e.get("keypoints_max_abs_diff"), ok))
    return tuple(exports)


def params_digest(params: Mapping[str, Any]) -> str:
    """sha256 of the params that decide what the zoo holds (models, quantize, accuracy)."""
    subset = {k: params.get(k) for k in ("models", "quantize", "accuracy")}
    return hashlib.sha256(json.dumps(subset, sort_keys=True, default=str).encode()).hexdigest()


def _target_descriptions(reader: _Reader) -> dict[str, str]:
    doc = yaml.safe_load(reader.bytes(TARGETS_FILE, f"targets/{TARGETS_FILE.name}"))
    return {name: str(t.get("description", "")) for name, t in doc["targets"].items()}


def collect_model(name: str, params: Mapping[str, Any], params_path: Path, metrics: Path, int8_dir: Path) -> ModelRecord:
    """The record of one model listed in ``params.models``; PosezooError if a stage output is missing."""
    spec, resolution = model_for(dict(params), name, params_path)
    reader = _Reader()
    reader.bytes(spec.path, f"registry/{spec.path.name}")
    variants = tuple(_variant(name, s, f, metrics, int8_dir, reader) for s, f in expected_variants(params, params_path))
    conv_path = metrics / "convert" / f"{name}.json"
    conv = reader.json(conv_path, f"metrics/convert/{name}.json", f"the convert stage (convert@{name})")
    ffp_path = metrics / "footprint" / f"{name}-float-onnx.json"
    ffp = reader.json(ffp_path, f"metrics/footprint/{name}-float-onnx.json", f"the footprint-float stage (footprint-float@{name})")
    rec_path = metrics / "recommend" / f"{name}.json"
    rec = reader.json(rec_path, f"metrics/recommend/{name}.json", f"the recommend stage (recommend@{name})")
    onnx_outputs = (conv.get("onnx") or {}).get("outputs") or []
    raw = spec.raw
    reference = raw.get("reference") or {}
    accuracy = raw.get("accuracy") or {}
    datasets = tuple(str(d) for d in ((params.get("accuracy") or {}).get("datasets") or []))
    return ModelRecord(
        name=name,
        task=str(raw.get("task", "")),
        description=" ".join(str(raw.get("description", "")).split()),
        framework=str(raw.get("framework", "")),
        paper=raw.get("paper"),
        provenance=raw.get("provenance"),
        license=raw.get("license") or spec.source.get("license"),
        source=spec.source,
        resolution=resolution,
        input=spec.input,
        decoder=spec.decoder,
        keypoint_count=spec.keypoint_count,
        keypoint_output=spec.keypoint_output,
        accuracy_maps=tuple(sorted((accuracy.get("maps") or {}).keys())),
        reference_card=reference.get("card"),
        reference_figures=tuple(reference.get("figures") or ()),
        datasets=datasets,
        conversion_samples=conv.get("samples"),
        conversion_atol=conv.get("atol"),
        conversion_rtol=conv.get("rtol"),
        exports=_exports(conv),
        outputs=tuple(OutputInfo(int(o["index"]), tuple(int(d) for d in o["shape"])) for o in onnx_outputs),
        float_footprint=footprint_from(ffp, ffp_path),
        float_benchmark=_optional_benchmark(metrics, f"{name}-float", reader),
        variants=variants,
        recommendations=_recommendations(rec, rec_path),
        target_descriptions=_target_descriptions(reader),
        params_digest=params_digest(params),
        inputs_digest=reader.digest(),
    )


def collect(params_path: Path, metrics: Path, int8_dir: Path) -> list[ModelRecord]:
    """Records of every model of the params file, in params order."""
    params = load_params(params_path)
    return [collect_model(m, params, params_path, metrics, int8_dir) for m in get(dict(params), "models", params_path)]
