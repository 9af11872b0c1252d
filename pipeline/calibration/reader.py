"""Model inputs from a manifest, through one interface for every backend.

Like onnxruntime's ``CalibrationDataReader`` (a one-method protocol that decouples data from the
quantizer), :func:`iter_inputs` is the single place a manifest becomes tensors; the TFLite
representative dataset, the ONNX calibration reader and the drift evaluation all call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from onnxruntime.quantization import CalibrationDataReader

from pipeline.calibration.images import crop_and_resize, load_rgb, to_tensor
from pipeline.calibration.sampler import read_manifest
from pipeline.errors import PosezooError
from pipeline.registry import InputSpec
from pipeline.roi.geometry import Roi
from pipeline.roi.warp import warp


def sample_pixels(img: Image.Image, sample: dict, spec: InputSpec, border: str = "zero") -> np.ndarray:
    """uint8 RGB input pixels of one manifest sample: its ROI warped (subject manifests, see
    :mod:`pipeline.calibration.subjects`) or its upright crop resized, then its photometric
    jitter (gain, offset), if any."""
    if "roi" in sample:
        pixels = warp(img, Roi.from_list(sample["roi"]), spec, border)
    else:
        pixels = crop_and_resize(img, sample["crop"], spec)
    gain, offset = sample.get("photometric", (1.0, 0.0))
    if (gain, offset) != (1.0, 0.0):
        pixels = np.clip(np.rint(pixels.astype(np.float32) * gain + offset), 0, 255).astype(np.uint8)
    return pixels


def iter_inputs(manifest_path: Path, spec: InputSpec, layout: str = "NHWC") -> Iterator[tuple[str, np.ndarray]]:
    """Yield (sample id, float32 input batch of one) for every manifest sample, in order."""
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    decoded: dict[str, Image.Image] = {}  # each distinct photo is decoded once per pass
    for sample in manifest["samples"]:
        image_path = manifest_path.parent / sample["file"]
        if not image_path.is_file():
            raise PosezooError(f"{image_path}: image named by {manifest_path} is missing; rerun `posezoo calibrate`")
        if sample["sha256"] not in decoded:
            decoded[sample["sha256"]] = load_rgb(image_path)
        pixels = sample_pixels(decoded[sample["sha256"]], sample, spec, manifest.get("border", "zero"))
        yield sample["id"], to_tensor(pixels, spec, layout)


class ManifestReader(CalibrationDataReader):
    """onnxruntime calibration reader over a manifest (input name → tensor dicts)."""

    def __init__(self, manifest_path: Path, spec: InputSpec, input_name: str, layout: str) -> None:
        self._inputs = iter_inputs(manifest_path, spec, layout)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self._inputs, None)
        return None if sample is None else {self._name: sample[1]}
