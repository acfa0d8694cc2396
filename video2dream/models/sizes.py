"""Picture sizes, without importing torch (status and planning use them)."""

from __future__ import annotations

import math


def generation_size(src_w: int, src_h: int, pixels: int = 1024 * 1024,
                    multiple: int = 64) -> tuple[int, int]:
    """The source's aspect ratio at about `pixels` pixels, both sides multiples of `multiple`.

    Rounding each side on its own gives SDXL's training buckets for the usual ratios
    (16:9 -> 1344x768, 4:3 -> 1152x896, 1:1 -> 1024x1024)."""
    if src_w <= 0 or src_h <= 0 or pixels <= 0 or multiple <= 0:
        raise ValueError(f"bad size {src_w}x{src_h} / {pixels} pixels / multiple {multiple}")
    ratio = src_w / src_h
    w, h = math.sqrt(pixels * ratio), math.sqrt(pixels / ratio)
    return (max(multiple, round(w / multiple) * multiple),
            max(multiple, round(h / multiple) * multiple))
