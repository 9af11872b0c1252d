"""Image loading and per-model preprocessing.

The registry's input spec says how a crop becomes a tensor (size, resize mode, colour order,
value range, layout); this module applies it, so every backend (TFLite, ONNX, the float model)
sees exactly the same pixels for the same manifest entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import PosezooError
from pipeline.registry import InputSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")


def load_rgb(path: Path) -> Image.Image:
    """Open ``path`` as 8-bit RGB; grayscale, palette and alpha images are converted, not rejected."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "RGBA" or img.mode == "LA" or (img.mode == "P" and "transparency" in img.info):
                background = Image.new("RGB", img.size, (0, 0, 0))
                background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
                return background
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise PosezooError(
            f"{path}: unreadable or corrupt image ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}); "
            "remove or replace the file"
        ) from err


def crop_and_resize(img: Image.Image, crop: Sequence[float], spec: InputSpec) -> np.ndarray:
    """Crop ``img`` to ``crop`` (x0, y0, x1, y1; outside the image is black) and size it for ``spec``.

    Returns uint8 RGB, shape (H, W, 3). ``letterbox`` keeps the aspect ratio and pads with black,
    ``stretch`` resizes to the input size directly.
    """
    x0, y0, x1, y1 = (int(round(v)) for v in crop)
    region = img.crop((x0, y0, x1, y1))
    if spec.resize == "letterbox":
        scale = min(spec.width / region.width, spec.height / region.height)
        new_w, new_h = max(1, round(region.width * scale)), max(1, round(region.height * scale))
        canvas = Image.new("RGB", (spec.width, spec.height), (0, 0, 0))
        canvas.paste(region.resize((new_w, new_h), Image.BILINEAR), ((spec.width - new_w) // 2, (spec.height - new_h) // 2))
        region = canvas
    else:
        region = region.resize((spec.width, spec.height), Image.BILINEAR)
    return np.asarray(region, dtype=np.uint8)


def to_tensor(pixels: np.ndarray, spec: InputSpec, layout: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) → float32 batch of one in ``layout`` with the spec's colour order and range."""
    if spec.color == "BGR":
        pixels = pixels[..., ::-1]
    x = spec.scale_pixels(pixels)[None]
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)
