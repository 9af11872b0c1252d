"""int8 OpenVINO IR export with NNCF post-training quantization.

The float ONNX the other exporters start from (``build/optimized/<model>-<scheme>/model.onnx``,
already equalized / bias-corrected by the recipe) is converted with ``openvino.convert_model``
and quantized by ``nncf.quantize`` on every calibration sample. NNCF's defaults differ from
the other exports in four ways, each set explicitly here so the IR is quantized like them:

- **Activation ranges**: NNCF's default for per-tensor activations is ``MEAN_MINMAX`` (the mean
  over samples of each sample's min / max), not the observed extremes; ``calibration: minmax``
  sets ``RangeEstimatorParametersSet.MINMAX``. The other methods (percentile, entropy, MSE) have
  no NNCF equivalent (its ``MEAN_QUANTILE`` averages per-sample quantiles, its ``HISTOGRAM`` is
  PyTorch's observer search), so the shared range table the TFLite / ONNX exports use is imposed
  on NNCF's activation FakeQuantize ops instead (:func:`impose_ranges`): each takes the table's
  range of the ONNX tensor it quantizes, in NNCF's quantizer shape (unsigned ``[0, hi]`` or
  symmetric ``[-a, a·127/128]``); the sidecar counts how many were matched.
- **Weights**: ``QuantizationParameters(per_channel=...)`` from the recipe's ``weights``, int8
  symmetric (``QuantizationPreset.PERFORMANCE``: symmetric weights and activations; NNCF makes an
  activation unsigned when it is non-negative, e.g. after ReLU). ``OverflowFix.DISABLE``: NNCF
  otherwise quantizes the first layer's weights to 7 bits (a workaround for CPUs without VNNI),
  which the TFLite / ONNX variants do not do.
- **Bias correction**: NNCF runs its fast bias correction by default on every variant. The
  recipe already decides bias correction (``bias_correction``, applied to the float model in
  `posezoo optimize`, empirically, for the scheme's granularity), so NNCF's is disabled: the IR
  differs from the TFLite / ONNX variants only by the quantizer, not by an extra correction only
  this format gets. :data:`NNCF_BIAS_CORRECTION` records the choice in the sidecar.
- **Float layers** (``float_nodes``, ONNX node names) become ``nncf.IgnoredScope`` names: the
  ONNX frontend keeps a node's name on the op computing it (``Conv_12``; a Conv with a bias is
  split into ``Conv_12/WithoutBiases`` + an ``Add`` named ``Conv_12``); a name with no such op
  (e.g. a layer whose output is a model output, which takes the output's name) is an error.

The IR is saved with ``compress_to_fp16=False`` (float constants stay float32; weights are
stored as int8 by OpenVINO's weight compression of the FakeQuantize nodes) into a temporary
directory beside the destination, then moved into place ``.bin`` first, ``.xml`` last, after
removing the old ``.xml``: an interrupted export leaves no ``.xml`` or a complete pair, never an
``.xml`` naming another export's ``.bin``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pipeline.calibration.reader import iter_inputs
from pipeline.convert.runners import onnx_input_layout
from pipeline.errors import PosezooError
from pipeline.quantize.config import QuantConfig
from pipeline.quantize.ranges import RangeTable
from pipeline.registry import InputSpec

log = logging.getLogger(__name__)

#: Whether NNCF's own (fast) bias correction runs: no, see the module docstring.
NNCF_BIAS_CORRECTION = False
#: An op name OpenVINO made up (``<Type>_<global counter>``): its number depends on what the process built before.
AUTO_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9]*?)_(\d+)$")
#: OpenVINO op types that carry the weights of a Conv / ConvTranspose / Gemm / MatMul layer.
WEIGHTED_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul")


def check_config(config: QuantConfig, where: str = "quantize config") -> None:
    """Refuse settings an int8 NNCF IR cannot honour; ``where`` names the recipe in the message."""
    if config.activation_bits != 8:
        raise PosezooError(
            f"{where}: activation_bits {config.activation_bits} is not an int8 OpenVINO IR; "
            "build this scheme as tflite / onnx only, or set activation_bits: 8"
        )


def impose_ranges(model: Any, table: RangeTable) -> dict[str, int]:
    """Set every activation FakeQuantize of ``model`` whose input is a tensor of ``table`` to its range.

    NNCF's quantizer shape is kept: an unsigned FQ (low 0) becomes ``[0, hi]``, a symmetric one
    ``[-a, a·127/128]`` with ``a`` covering the table's ``[lo, hi]``. Returns the counts of
    activation FQs, of those set and of those left with NNCF's MinMax range (their tensor has
    another name in the pre-processed ONNX the table was computed on).
    """
    import numpy as np
    import openvino as ov

    counts = {"activation_fq": 0, "imposed": 0, "kept_minmax": 0}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or op.input_value(0).get_node().get_type_name() == "Constant":
            continue
        counts["activation_fq"] += 1
        name = next((n for n in sorted(op.input_value(0).get_names()) if n in table.ranges), None)
        if name is None:
            counts["kept_minmax"] += 1
            continue
        lo, hi = table.ranges[name]
        low = op.input_value(1).get_node().get_data()
        if float(np.min(low)) >= 0.0:
            bounds = (0.0, max(hi, 0.0))
        else:
            a = max(-lo, hi * 128.0 / 127.0, 0.0)
            bounds = (-a, a * 127.0 / 128.0)
        for i, value in zip((1, 2, 3, 4), bounds * 2):
            op.input(i).replace_source_output(ov.op.Constant(np.full(low.shape, value, np.float32)).output(0))
        counts["imposed"] += 1
    return counts


def ignored_names(model: Any, float_nodes: tuple[str, ...], float_onnx: Path) -> list[str]:
    """OpenVINO op names computing the ONNX layers ``float_nodes`` (for ``nncf.IgnoredScope``)."""
    by_name = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    names, missing = [], []
    for node in float_nodes:
        found = [n for n in (node, f"{node}/WithoutBiases") if by_name.get(n) in WEIGHTED_OPS]
        if not found:
            missing.append(node)
        names += found
    if missing:
        raise PosezooError(
            f"{float_onnx}: float_nodes {', '.join(missing)}: no OpenVINO op keeps this ONNX node name, so NNCF cannot "
            "keep it float; build this scheme as tflite / onnx only, or drop the fallback from the recipe"
        )
    return names


def settings(config: QuantConfig) -> dict[str, Any]:
    """What the sidecar records about the NNCF run (tool versions and the non-default choices)."""
    import nncf
    import openvino as ov

    return {
        "tool": f"nncf {nncf.__version__}, openvino {ov.get_version().split('-')[0]}",
        "preset": "performance",
        "activation_range": "minmax",
        "overflow_fix": "disable",
        "nncf_bias_correction": NNCF_BIAS_CORRECTION,
        "weights_per_channel": config.per_channel,
    }


def canonicalize_names(model: Any, keep: set[str]) -> None:
    """Rename the ops OpenVINO and NNCF named from a process-wide counter, in graph order.

    OpenVINO names an op it creates ``<Type>_<n>`` with ``n`` a counter global to the process
    (``Constant_8825`` in one export is ``Constant_17546`` in the next), and NNCF's new weight
    constants and constant folding leave such names in the IR: two exports of the same model
    differ. Each such name (first ``/``-separated part, so ``Constant_12/fq_output_0`` follows
    its op) not in ``keep`` (the ONNX node and tensor names) becomes ``<Type>_ov<k>``, ``k`` in
    topological order: the IR depends only on the graph.
    """
    renamed: dict[str, str] = {}
    for op in model.get_ordered_ops():
        head, sep, rest = op.get_friendly_name().partition("/")
        match = AUTO_NAME.match(head)
        if head in keep or match is None:
            continue
        renamed.setdefault(head, f"{match.group(1)}_ov{len(renamed)}")
        op.set_friendly_name(renamed[head] + sep + rest)


def _onnx_names(float_onnx: Path) -> set[str]:
    """Node, tensor, input and output names of an ONNX graph (the names an IR op may rightly carry)."""
    import onnx

    graph = onnx.load(str(float_onnx), load_external_data=False).graph
    names = {n.name for n in graph.node} | {t for n in graph.node for t in (*n.input, *n.output)}
    return names | {i.name for i in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}


def _save_pair(model: Any, dest: Path) -> None:
    """``dest`` (.xml) and its .bin, written beside it and moved into place (see the module docstring)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix=f".{dest.stem}.", dir=dest.parent) as tmp:
        staged = Path(tmp) / dest.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        dest.unlink(missing_ok=True)
        os.replace(staged.with_suffix(".bin"), dest.with_suffix(".bin"))
        os.replace(staged, dest)


def export_openvino_int8(
    float_onnx: Path, dest: Path, manifest: Path, spec: InputSpec, config: QuantConfig, where: str = "quantize config", ranges: RangeTable | None = None
) -> dict[str, Any]:
    """Write an int8 IR of ``float_onnx`` quantized per ``config`` to ``dest`` (.xml, .bin beside it).

    Returns :func:`settings` for the sidecar. ``where`` names the recipe in configuration errors.
    A non-MinMax ``config`` needs ``ranges`` (its shared range table, :func:`impose_ranges`).
    """
    check_config(config, where)
    if config.shared_ranges and (ranges is None or not ranges.fits(config)):
        raise PosezooError(f"{where}: calibration {config.calibration} needs its shared range table (ranges.json of `posezoo optimize`) for the OpenVINO IR")
    dest = Path(dest)
    if dest.suffix != ".xml":
        raise PosezooError(f"{dest}: an OpenVINO IR is written as <name>.xml (+ <name>.bin); pass a .xml path")
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    float_onnx = Path(float_onnx)
    try:
        model = ov.convert_model(str(float_onnx))
    except Exception as err:  # OpenVINO raises RuntimeError / OpConversionFailure with C++ traces
        first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        raise PosezooError(f"{float_onnx}: OpenVINO cannot convert this ONNX ({first}); check the float model") from err
    ignored = ignored_names(model, config.float_nodes, float_onnx)
    samples = [x for _, x in iter_inputs(manifest, spec, onnx_input_layout(float_onnx))]
    if not samples:
        raise PosezooError(f"{manifest}: the calibration manifest has no samples; rerun `posezoo calibrate`")
    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.DISABLE,
        disable_bias_correction=not NNCF_BIAS_CORRECTION,
        weights_quantization_params=QuantizationParameters(per_channel=config.per_channel),
        # NNCF's CPU configuration quantizes a depthwise conv's input per channel; the other
        # formats quantize every activation per tensor
        activations_quantization_params=QuantizationParameters(per_channel=False),
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
    )
    nncf.set_log_level(logging.ERROR)
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            target_device=nncf.TargetDevice.CPU,
            subset_size=len(samples),
            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
            advanced_parameters=advanced,
        )
    except Exception as err:  # NNCF raises its own and OpenVINO's exceptions
        first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "")
        raise PosezooError(f"{float_onnx}: NNCF quantization failed ({type(err).__name__}: {first}); check the float model") from err
    imposed = impose_ranges(quantized, ranges) if config.shared_ranges and ranges is not None else None
    canonicalize_names(quantized, _onnx_names(float_onnx))
    dest.parent.mkdir(parents=True, exist_ok=True)
    _save_pair(quantized, dest)
    log.info("wrote %s (+ .bin; NNCF, %s, %s, %d float layers)", dest, "per-channel" if config.per_channel else "per-tensor", config.calibration, len(config.float_nodes))
    return settings(config) | ({"activation_range": config.calibration, "ranges": imposed} if imposed is not None else {})
