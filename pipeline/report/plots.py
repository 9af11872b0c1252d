"""Accuracy-vs-footprint figures: a PNG per model card and the CSV ``dvc plots`` reads.

The PNG is drawn with matplotlib's Agg canvas on a private Figure (no pyplot global state) and
saved without the "Software" metadata chunk, so identical records give identical PNG bytes. The
CSV (``plots/zoo/variants.csv``) has one row per int8 variant; dvc.yaml's top-level ``plots``
render "accuracy vs weights flash" and "accuracy vs latency" from it.
"""

from __future__ import annotations

import csv
import io
from typing import Sequence

from pipeline.report.records import ModelRecord, Variant

CSV_COLUMNS = (
    "model", "variant", "format", "scheme", "resolution", "weights_flash_kib", "activation_ram_kib", "macc_m",
    "drift_mean_norm_pct", "drift_mean_px", "host_latency_ms", "latency_runtime",
)

#: Ground-truth figures where smaller is better (the others: OKS, AP, PCK are larger-is-better).
LOWER_IS_BETTER = {"nme_interocular", "epe_px"}


def _label(v: Variant) -> str:
    return f"{v.scheme} {v.format}"


def _gt_series(record: ModelRecord) -> tuple[str, list[tuple[Variant, float]], float | None] | None:
    """(axis label, [(variant, int8 value)], float value) of the first dataset with a primary figure."""
    for ds in record.datasets:
        points: list[tuple[Variant, float]] = []
        label, float_value = None, None
        for v in record.variants:
            for a in v.accuracy:
                key = a.primary() if a.dataset == ds else None
                if key is not None:
                    label = f"{ds}: {key}"
                    points.append((v, float(a.int8[key])))
                    if float_value is None and isinstance(a.float.get(key), (int, float)):
                        float_value = float(a.float[key])
        if label is not None:
            return label, points, float_value
    return None


def render_png(record: ModelRecord) -> bytes:
    """Mean drift (% of input) — and the ground-truth figure when measured — against weights flash."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gt = _gt_series(record)
    fig = Figure(figsize=(6.4 * (2 if gt else 1), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if gt else 1, squeeze=False)[0]
    markers = "osD^v<>ph*"
    ax = axes[0]
    for i, v in enumerate(record.variants):
        if v.footprint.flash_bytes is None:  # no flash estimate (a format the estimator does not read): nothing to place here
            continue
        x, y = v.footprint.flash_bytes / 1024, 100.0 * v.drift.mean_norm
        ax.scatter([x], [y], marker=markers[i % len(markers)], s=48, label=_label(v))
        ax.annotate(_label(v), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel("weights flash (KiB)")
    ax.set_ylabel("mean int8 drift vs float (% of input size)")
    ax.set_title(f"{record.name}: int8 drift vs weights flash", fontsize=10)
    top = max((100.0 * v.drift.mean_norm for v in record.variants), default=0.0)
    ax.set_ylim(0, top * 1.2 if top > 0 else 1.0)
    ax.margins(x=0.15)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if gt:
        label, points, float_value = gt
        ax = axes[1]
        for v, value in points:
            if v.footprint.flash_bytes is None:
                continue
            x = v.footprint.flash_bytes / 1024
            ax.scatter([x], [value], marker=markers[record.variants.index(v) % len(markers)], s=48, label=_label(v))
            ax.annotate(_label(v), (x, value), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if float_value is not None:
            fx = record.float_footprint.flash_bytes / 1024
            ax.scatter([fx], [float_value], marker="x", color="black", s=48, label="float model")
            ax.annotate("float", (fx, float_value), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.set_xlabel("weights flash (KiB)")
        ax.set_ylabel(label + (" (lower is better)" if label.split(": ")[-1] in LOWER_IS_BETTER else " (higher is better)"))
        ax.margins(x=0.15, y=0.2)
        ax.set_title(f"{record.name}: ground truth vs weights flash", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _fixed(value: int | None, unit: float, digits: int) -> str:
    """``value / unit`` with fixed decimals; empty (a gap in DVC plots) when not estimated."""
    return "" if value is None else f"{value / unit:.{digits}f}"


def variant_rows(records: Sequence[ModelRecord]) -> list[dict[str, str]]:
    """The CSV rows: figures with fixed decimals; latency empty when not measured."""
    rows = []
    for r in records:
        for v in r.variants:
            latency = v.benchmark.fastest_median_ms if v.benchmark else None
            rows.append(
                {
                    "model": r.name,
                    "variant": v.file,
                    "format": v.format,
                    "scheme": v.scheme,
                    "resolution": str(r.resolution),
                    "weights_flash_kib": _fixed(v.footprint.flash_bytes, 1024, 2),
                    "activation_ram_kib": _fixed(v.footprint.activations_plan_bytes, 1024, 2),
                    "macc_m": _fixed(v.footprint.macc, 1e6, 3),
                    "drift_mean_norm_pct": f"{100.0 * v.drift.mean_norm:.4f}",
                    "drift_mean_px": f"{v.drift.mean_px:.4f}",
                    "host_latency_ms": "" if latency is None else f"{latency:.4f}",
                    "latency_runtime": "" if latency is None or v.benchmark is None else str(v.benchmark.fastest),
                }
            )
    return rows


def render_csv(records: Sequence[ModelRecord]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(variant_rows(records))
    return buf.getvalue()
