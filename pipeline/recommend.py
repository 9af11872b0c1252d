"""Which variant to deploy on which target: the most accurate one the target can run and hold.

Each target in ``pipeline/footprint/targets.yaml`` says, in its ``quantization`` block, which
weight granularities, activation widths and float fallback layers its accelerator runs (with the
document it comes from); the footprint stage says whether a variant fits its memory. Among the
variants that pass both, the recommendation is the one with the lowest mean drift against the
float model on the held-out images (ties: the smaller weights). Every candidate and the reason it
was dropped are kept in the output, so a surprising pick can be checked.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pipeline.errors import PosezooError
from pipeline.footprint.targets import load_targets
from pipeline.formats import named


def _scheme(evaluate: Mapping[str, Any]) -> dict[str, Any]:
    """Weight granularity, activation width and float layers of a variant, from its evaluate metrics."""
    q = evaluate.get("quantization")
    if not isinstance(q, Mapping):
        raise PosezooError(f"{evaluate.get('variant')}: metrics carry no 'quantization' block; rerun `posezoo evaluate`")
    return {"granularity": q["granularity"], "activation_bits": int(q["activation_bits"]), "float_layers": int(q.get("float_layers", 0))}


def _unsupported(scheme: Mapping[str, Any], caps: Mapping[str, Any]) -> str | None:
    if scheme["granularity"] not in caps["granularities"]:
        return f"{scheme['granularity']} weights are not run by the accelerator ({', '.join(caps['granularities'])} only)"
    if scheme["activation_bits"] not in caps["activation_bits"]:
        return f"{scheme['activation_bits']}-bit activations are not supported"
    if scheme["float_layers"] and not caps["float_layers"]:
        return f"{scheme['float_layers']} float layers would leave the accelerator"
    return None


def recommend(model: str, variants: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> dict[str, Any]:
    """Per target: the chosen variant and every candidate with its verdict.

    ``variants`` are (evaluate metrics, footprint metrics) pairs of one model.
    """
    if not variants:
        raise PosezooError(f"{model}: no evaluated variants to recommend from; run `posezoo evaluate` and `posezoo footprint` first")
    result: dict[str, Any] = {"model": model, "criterion": "lowest mean drift (px) among variants the target runs and holds", "targets": {}}
    for name, target in load_targets().items():
        caps = target.quantization
        if caps is None:
            continue
        candidates = []
        for evaluate, footprint in variants:
            scheme = _scheme(evaluate)
            fit = footprint["targets"].get(name, {})
            kind = named(footprint.get("format"))
            reason = (kind.not_on_targets() if kind is not None else None) or _unsupported(scheme, caps) or (None if fit.get("fits") else "does not fit the target's memory")
            candidates.append(
                {
                    "variant": evaluate["variant"],
                    **scheme,
                    "mean_px": evaluate["mean_px"],
                    "weights_bytes": footprint["weights_bytes"],
                    "eligible": reason is None,
                    **({"reason": reason} if reason else {}),
                }
            )
        eligible = sorted((c for c in candidates if c["eligible"]), key=lambda c: (c["mean_px"], c["weights_bytes"], c["variant"]))
        result["targets"][name] = {
            "recommended": eligible[0]["variant"] if eligible else None,
            "recommended_mean_px": eligible[0]["mean_px"] if eligible else None,
            "constraint": caps["summary"],
            "candidates": sorted(candidates, key=lambda c: c["variant"]),
        }
    return result
