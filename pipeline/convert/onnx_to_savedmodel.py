"""Float ONNX → float SavedModel with onnx2tf (pinned 1.28.8).

TFLiteConverter's full-integer path needs a SavedModel, and onnx2tf is the maintained converter
that produces one from ONNX with an NHWC interface. Two quirks are handled here:
- onnx2tf loads a 20×128×128×3 "calibration sample" ``.npy`` from its working directory and
  otherwise downloads one (and crashes offline). We run it in a temporary directory seeded with
  that file, built from real calibration photos, so no network is touched.
- onnx2tf names SavedModel outputs ``output_<i>`` in ONNX output order; callers map outputs by
  those signature keys (see :mod:`pipeline.convert.runners`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.calibration.images import load_rgb
from pipeline.calibration.reader import sample_pixels
from pipeline.calibration.sampler import read_manifest
from pipeline.errors import PosezooError
from pipeline.registry import InputSpec
from pipeline.threads import tensorflow

log = logging.getLogger(__name__)

ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def onnx2tf_sample(manifest_path: Path) -> np.ndarray:
    """20 real 128×128 RGB crops in [0, 1] from a manifest, in the shape onnx2tf expects."""
    manifest = read_manifest(manifest_path)
    spec = InputSpec(height=128, width=128, channels=3, layout="NHWC", color="RGB", value_range=(0.0, 1.0), resize="stretch")
    crops = []
    for sample in manifest["samples"][:20]:
        img = load_rgb(Path(manifest_path).parent / sample["file"])
        crops.append(spec.scale_pixels(sample_pixels(img, sample, spec, manifest.get("border", "zero"))))
    while len(crops) < 20:
        crops.append(crops[len(crops) % len(manifest["samples"])])
    return np.stack(crops).astype(np.float32)


def onnx_to_savedmodel(src: Path, dest: Path, manifest_path: Path) -> None:
    """Convert ``src`` (ONNX, NCHW input) to a SavedModel directory ``dest`` (atomic)."""
    tensorflow()  # before onnx2tf starts TensorFlow's runtime
    import onnx2tf

    src = Path(src).resolve()
    with atomic_path(dest) as tmp:
        work = tmp.with_name(tmp.name + ".work")
        work.mkdir()
        np.save(work / ONNX2TF_SAMPLE, onnx2tf_sample(manifest_path))
        cwd = os.getcwd()
        os.chdir(work)
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured):
                onnx2tf.convert(
                    input_onnx_file_path=str(src),
                    output_folder_path=str(tmp.resolve()),
                    output_signaturedefs=True,
                    non_verbose=True,
                )
        except (Exception, SystemExit) as err:  # onnx2tf calls sys.exit on conversion errors
            tail = " | ".join(line.strip() for line in captured.getvalue().splitlines()[-3:] if line.strip())
            raise PosezooError(f"{src}: onnx2tf cannot convert it ({type(err).__name__}: {err} {tail}); check the ONNX model") from err
        finally:
            os.chdir(cwd)
            for leftover in work.iterdir():
                leftover.unlink()
            work.rmdir()
        for by_product in tmp.glob("*.tflite"):
            by_product.unlink()  # onnx2tf also writes float TFLite files; posezoo exports its own
    log.info("converted %s -> %s (SavedModel)", src.name, dest)
