"""Picture sizes, without importing torch (status and planning use them)."""

from __future__ import annotations

import math

# SDXL's training buckets go from 1:4 to 4:1; a more extreme source (a 1x4000 strip) is painted at
# 4:1 (the dream is the middle of its shape, as assemble crops) rather than at 64x16192.
MAX_ASPECT = 4.0


def generation_size(src_w: int, src_h: int, pixels: int = 1024 * 1024,
                    multiple: int = 64) -> tuple[int, int]:
    """The source's aspect ratio at about `pixels` pixels, both sides multiples of `multiple`.

    Rounding each side on its own gives SDXL's training buckets for the usual ratios
    (16:9 -> 1344x768, 4:3 -> 1152x896, 1:1 -> 1024x1024). The aspect ratio is kept within
    MAX_ASPECT (4:1 -> 2048x512), so neither side runs away."""
    if src_w <= 0 or src_h <= 0 or pixels <= 0 or multiple <= 0:
        raise ValueError(f"bad size {src_w}x{src_h} / {pixels} pixels / multiple {multiple}")
    ratio = min(max(src_w / src_h, 1 / MAX_ASPECT), MAX_ASPECT)
    w, h = math.sqrt(pixels * ratio), math.sqrt(pixels / ratio)
    return (max(multiple, round(w / multiple) * multiple),
            max(multiple, round(h / multiple) * multiple))
