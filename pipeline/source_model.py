"""Where model files live inside stage output directories.

``posezoo fetch`` writes ``build/source/<model>/model.<ext>`` (plus ``model.bin`` for OpenVINO
IR) and ``provenance.json``; later stages find the model file through :func:`model_file` instead
of guessing names.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PosezooError
from pipeline.formats import MODEL_SUFFIXES, source_format
from pipeline.registry import ModelSpec


def extension(fmt: str) -> str:
    """File extension of a registry source ``format``."""
    return source_format(fmt).suffix


def model_file(source_dir: Path, fmt: str) -> Path:
    """The model file inside a fetch output directory (its companions, e.g. an IR's .bin, checked beside it)."""
    kind = source_format(fmt)
    path = Path(source_dir) / f"model{kind.suffix}"
    if not path.is_file():
        raise PosezooError(f"{path}: source model missing; run `posezoo fetch` (or `dvc repro`) first")
    for companion in kind.companions:
        if not path.with_suffix(companion.suffix).is_file():
            raise PosezooError(f"{path.with_suffix(companion.suffix)}: {companion.what} are missing beside {path.name}; re-run `posezoo fetch` (the registry source needs a `weights:` entry)")
    return path


def single_model(path: Path) -> Path:
    """``path`` itself if it is a file, else the one model file (:data:`~pipeline.formats.MODEL_SUFFIXES`) in the directory ``path``.

    ``dvc.yaml`` names stage outputs by stage key; the file inside carries the variant name
    (``<model>_<res>_int8_<pc|pt>.<format>``), which only the quantize stage computes. An OpenVINO
    IR directory holds ``<variant>.xml`` with its ``.bin``; the ``.xml`` is the model file.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise PosezooError(f"{path}: no such model file or directory; check the path")
    files = sorted(p for p in path.glob("*") if p.suffix in MODEL_SUFFIXES)
    if len(files) != 1:
        raise PosezooError(f"{path}: expected exactly one {'/'.join(MODEL_SUFFIXES)} file, found {len(files)}; run `posezoo quantize` first")
    return files[0]


#: Source formats that are float models a runner executes directly (an OpenVINO IR runs on
#: OpenVINO's CPU plugin at f32 precision), so they are their own float reference. A Keras source
#: is not listed: its float reference is the ONNX `convert` verified against it, so evaluation
#: and the host benchmark never load Keras (the benchmark has no Keras runtime).
FLOAT_FORMATS = ("tflite", "openvino-ir")


def reference_model(spec: ModelSpec, source_dir: Path, float_dir: Path | None) -> Path:
    """The float model int8 variants are judged against.

    For a float source that is the source file itself; for a published int8 source
    (requantization) it is the dequantized float ONNX ``posezoo convert`` verified against it, and
    for a Keras source the float ONNX converted from it and verified against it.
    """
    fmt = spec.source["format"]
    if fmt in FLOAT_FORMATS:
        return model_file(source_dir, fmt)
    if float_dir is None:
        raise PosezooError(f"{spec.name}: the source is {fmt}, so the float reference is the converted model; pass --float-dir (output of `posezoo convert`)")
    path = Path(float_dir) / "model.onnx"
    if not path.is_file():
        raise PosezooError(f"{path}: float model missing; run `posezoo convert` (or `dvc repro`) first")
    return path
