"""Colour coherence: a dream's colours pulled toward its source frame's, against flicker.

Deforum's idea (its "LAB" colour coherence): in CIELAB, each channel of the picture is shifted and
scaled so that its mean and standard deviation are the reference's (Reinhard's colour transfer).
Sizes may differ: only the statistics of the reference are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


def lab(image: Image.Image) -> np.ndarray:
    """An RGB picture in CIELAB, float32 (L 0-100, a and b about -128-127)."""
    import cv2
    import numpy as np

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)


def lab_stats(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation in LAB."""
    pixels = lab(image).reshape(-1, 3)
    return pixels.mean(axis=0), pixels.std(axis=0)


def match_lab(image: Image.Image, reference: Path) -> Image.Image:
    """image with each LAB channel's mean and std made the reference picture's."""
    import cv2
    import numpy as np
    from PIL import Image

    try:
        with Image.open(reference) as im:
            mean_r, std_r = lab_stats(im)
    except OSError:
        raise UserError(f"cannot read {reference} to match the dream's colours to it (--color-coherence lab); "
                        "run `video2dream extract` again, or --color-coherence none") from None
    pixels = lab(image)
    mean, std = pixels.reshape(-1, 3).mean(axis=0), pixels.reshape(-1, 3).std(axis=0)
    # A flat channel (one colour) has no spread to scale: only its mean moves.
    scale = np.where(std > 1e-6, std_r / np.maximum(std, 1e-6), 1.0)
    pixels = (pixels - mean) * scale + mean_r
    pixels[..., 0] = np.clip(pixels[..., 0], 0, 100)
    rgb = cv2.cvtColor(pixels.astype(np.float32), cv2.COLOR_LAB2RGB)
    return Image.fromarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
