"""Every model file format posezoo reads or writes, in one table.

A format has two names in the pipeline: ``name``, what the registry's source ``format`` and the
footprint metrics' ``format`` field say (``openvino-ir``), and ``variant``, the int8 format of
``quantize.formats``, of the stage keys and of the cards (``openvino``). Which files make up one
model (an IR's ``.bin`` beside its ``.xml``), whether the footprint estimator reads it and whether
the targets' toolchains take it are looked up here, so a stage or the report never spells a
format's special case itself and a new format is one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PosezooError


@dataclass(frozen=True)
class Companion:
    """A file that belongs to a model file: same stem, its own suffix (an IR's weights)."""

    suffix: str
    what: str  # how an error names it, e.g. "the IR's weights"


@dataclass(frozen=True)
class ModelFormat:
    """One model file format (see the module docstring)."""

    name: str
    label: str  # how a reason written into metrics names it, e.g. "OpenVINO IR"
    suffix: str
    sources: tuple[str, ...]  # registry source formats stored as this file ("tflite-int8" is a .tflite)
    variant: str | None = None  # the name in quantize.formats; None: posezoo exports no int8 variant of it
    companions: tuple[Companion, ...] = ()
    estimated: bool = False  # the footprint estimator reads it (MACC, activation RAM, flash, target verdicts)
    on_targets: bool = False  # the targets' toolchains (STEdgeAI, eIQ / Vela) take it

    def files(self, model: Path) -> list[Path]:
        """The model file and its companions: what is published, sized and hashed as one model."""
        model = Path(model)
        return [model, *(model.with_suffix(c.suffix) for c in self.companions)]

    def not_on_targets(self) -> str | None:
        """Why no target can run this format (recommend's reason); None when the targets take it."""
        if self.on_targets:
            return None
        return f"{self.label}: the target's toolchain takes {' or '.join(f.label for f in FORMATS if f.on_targets)}"


TFLITE = ModelFormat("tflite", "TFLite", ".tflite", ("tflite", "tflite-int8"), variant="tflite", estimated=True, on_targets=True)
ONNX = ModelFormat("onnx", "ONNX", ".onnx", ("onnx", "onnx-qdq"), variant="onnx", estimated=True, on_targets=True)
OPENVINO_IR = ModelFormat("openvino-ir", "OpenVINO IR", ".xml", ("openvino-ir",), variant="openvino", companions=(Companion(".bin", "the IR's weights"),))
FORMATS: tuple[ModelFormat, ...] = (
    TFLITE,
    ONNX,
    OPENVINO_IR,
    ModelFormat("pytorch", "PyTorch", ".pt", ("pytorch",)),
    ModelFormat("keras", "Keras", ".keras", ("keras",)),
)
#: The int8 formats `posezoo quantize` writes (``quantize.formats``), in table order.
VARIANT_FORMATS: tuple[str, ...] = tuple(f.variant for f in FORMATS if f.variant)
#: Suffixes of the model files the stages write (one per stage output directory).
MODEL_SUFFIXES: tuple[str, ...] = tuple(f.suffix for f in FORMATS if f.variant)


def variant_format(variant: str) -> ModelFormat:
    """The format of an int8 variant named as in ``quantize.formats``."""
    for f in FORMATS:
        if f.variant == variant:
            return f
    raise PosezooError(f"int8 format {variant!r} is unknown; use one of {', '.join(VARIANT_FORMATS)}")


def source_format(source: str) -> ModelFormat:
    """The format of a registry source ``format``."""
    for f in FORMATS:
        if source in f.sources:
            return f
    raise PosezooError(f"source format {source!r} is unknown; use one of {', '.join(s for f in FORMATS for s in f.sources)}")


def named(name: str | None) -> ModelFormat | None:
    """The format a metrics file's ``format`` field names; None when it names none of the table."""
    return next((f for f in FORMATS if f.name == name), None)


def of_file(path: Path | str) -> ModelFormat | None:
    """The format of a model file, by its suffix; None for a suffix of no format."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS if f.suffix == suffix), None)
