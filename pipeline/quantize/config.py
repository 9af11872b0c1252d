"""What an int8 export does: weight granularity, activation calibration, precision, float layers.

:class:`QuantConfig` is the one value both exporters take, so a TFLite and an ONNX variant made
from the same config are quantized the same way:

- ``calibration`` picks how activation ranges come from the calibration manifest: ``minmax``
  (observed extremes: each exporter's own MinMax calibration, byte-identical to the exports
  before calibration choices existed), ``percentile`` (onnxruntime's percentile calibrator,
  ``percentile`` of |x|), ``entropy`` (onnxruntime's KL-divergence calibrator) or ``mse`` (the
  clipping range minimising the expected squared quantization error, from onnxruntime's
  histograms). For all but ``minmax`` the ranges are computed once on the float ONNX
  (:mod:`pipeline.quantize.ranges`) and imposed on both exports.
- ``activation_bits``: 8 (int8 activations) or 16 (int16 activations with int8 weights: TFLite's
  16x8 mode, onnxruntime's ``QInt16`` activations).
- ``float_nodes``: layers kept in float (per-layer fallback). A layer is named by its **ONNX node
  name** in the float ONNX (``build/float/<model>/model.onnx``, canonical names such as
  ``Conv_12``); :func:`quantizable_layers` lists the candidates. onnxruntime excludes the node
  itself; the TFLite exporter finds the TFLite operator computing the same layer (same weights)
  and keeps it float (see :mod:`pipeline.quantize.tflite`).

Every invalid value is a one-line :class:`~pipeline.errors.PosezooError` naming the setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import PosezooError
from pipeline.quantize.preprocess import preprocess_onnx

CALIBRATIONS = ("minmax", "percentile", "entropy", "mse")
ACTIVATION_BITS = (8, 16)
#: ONNX op types the fallback search considers: the layers that carry weights and most MACs.
LAYER_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Keys of a params.yaml ``quantize`` mapping that :meth:`QuantConfig.from_params` reads.
PARAM_KEYS = ("calibration", "percentile", "activation_bits", "float_nodes")


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize one variant; the defaults reproduce the original MinMax int8 export."""

    per_channel: bool
    calibration: str = "minmax"
    percentile: float = 99.99
    activation_bits: int = 8
    float_nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.per_channel, bool):
            raise PosezooError(f"quantize config: per_channel must be true or false, not {self.per_channel!r}")
        if self.calibration not in CALIBRATIONS:
            raise PosezooError(f"quantize config: calibration {self.calibration!r} is unknown; use one of {', '.join(CALIBRATIONS)}")
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)) or not math.isfinite(self.percentile) or not 50.0 < self.percentile <= 100.0:
            raise PosezooError(f"quantize config: percentile must be a number in (50, 100], e.g. 99.99, not {self.percentile!r}")
        if isinstance(self.activation_bits, bool) or self.activation_bits not in ACTIVATION_BITS:
            raise PosezooError(f"quantize config: activation_bits must be 8 or 16 (int16 activations, int8 weights), not {self.activation_bits!r}")
        nodes = self.float_nodes
        if isinstance(nodes, str) or not isinstance(nodes, (tuple, list)) or not all(isinstance(n, str) and n for n in nodes):
            raise PosezooError(f"quantize config: float_nodes must be a list of ONNX node names (see quantizable_layers), not {nodes!r}")
        duplicates = sorted({n for n in nodes if list(nodes).count(n) > 1})
        if duplicates:
            raise PosezooError(f"quantize config: float_nodes names {', '.join(duplicates)} more than once; list each layer once")
        object.__setattr__(self, "float_nodes", tuple(nodes))
        object.__setattr__(self, "percentile", float(self.percentile))

    @classmethod
    def from_params(cls, section: Mapping[str, Any] | None, per_channel: bool, where: str = "quantize") -> "QuantConfig":
        """A config from a params.yaml mapping (keys :data:`PARAM_KEYS`); unknown keys are errors."""
        section = dict(section or {})
        unknown = sorted(set(section) - set(PARAM_KEYS))
        if unknown:
            raise PosezooError(f"{where}: unknown quantize setting(s) {', '.join(unknown)}; use {', '.join(PARAM_KEYS)}")
        if "float_nodes" in section and section["float_nodes"] is None:
            section["float_nodes"] = ()
        try:
            return cls(per_channel=per_channel, **section)
        except PosezooError as err:
            raise PosezooError(f"{where}: {str(err).removeprefix('quantize config: ')}") from None

    @property
    def shared_ranges(self) -> bool:
        """True when activation ranges are computed on the float ONNX and imposed on both formats."""
        return self.calibration != "minmax"

    @property
    def tag(self) -> str:
        """Short suffix naming the non-default choices (empty for the default config)."""
        parts = []
        if self.calibration == "percentile":
            parts.append(f"p{self.percentile:g}")
        elif self.calibration != "minmax":
            parts.append(self.calibration)
        if self.float_nodes:
            parts.append(f"fb{len(self.float_nodes)}")
        return "_".join(parts)


def quantizable_layers(float_onnx: Path) -> list[str]:
    """Names of the Conv/ConvTranspose/Gemm/MatMul nodes of ``float_onnx``, in graph order.

    These are the names :attr:`QuantConfig.float_nodes` takes. Only nodes that survive
    onnxruntime's quantization pre-processing (which the ONNX exporter runs first) are listed, so
    every name is one ``nodes_to_exclude`` can match.
    """
    import tempfile

    import onnx

    graph = onnx.load(str(float_onnx), load_external_data=False).graph
    with tempfile.TemporaryDirectory(prefix="posezoo-layers-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        preprocess_onnx(Path(float_onnx), pre)
        kept = {n.name for n in onnx.load(str(pre), load_external_data=False).graph.node if n.op_type in LAYER_OP_TYPES}
    return [n.name for n in graph.node if n.op_type in LAYER_OP_TYPES and n.name in kept]
