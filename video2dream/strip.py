"""Pictures of a telephone chain: the strip (every step side by side, its caption under it), the index
of many strips, and the drift plot (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .runfolder import atomic_path

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

MARGIN = 12  # around and between tiles, in pixels
FONT_SIZE = 14
TITLE_SIZE = 16
MAX_CAPTION_LINES = 12
MAX_STRIP_WIDTH = 16384  # tiles shrink (to MIN_TILE_HEIGHT at most) to keep a long chain viewable
MIN_TILE_HEIGHT = 64
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (110, 110, 110)
CAPTIONS_CHUNK = "video2dream-captions"  # the strip's captions, as JSON, in a PNG text chunk


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` (needs FreeType); else its small bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def line_height(f) -> int:
    left, top, right, bottom = f.getbbox("Ag|y")
    return bottom - min(top, 0) + 4


def wrap(text: str, f, width: int, max_lines: int = MAX_CAPTION_LINES) -> list[str]:
    """Greedy word wrap to `width` pixels; words longer than a line are split; '...' ends a cut."""
    draw = _measure()
    lines: list[str] = []
    current = ""
    for word in text.split():
        while draw.textlength(word, font=f) > width and len(word) > 1:  # a word wider than the line
            cut = len(word)
            while cut > 1 and draw.textlength(word[:cut], font=f) > width:
                cut -= 1
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:cut])
            word = word[cut:]
        trial = f"{current} {word}".strip()
        if current and draw.textlength(trial, font=f) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and draw.textlength(last + "...", font=f) > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "..."
    return lines


def _measure() -> ImageDraw.ImageDraw:
    from PIL import Image, ImageDraw

    return ImageDraw.Draw(Image.new("RGB", (1, 1)))


def tile_sizes(images: Sequence[Image.Image], tile_height: int,
               max_width: int = MAX_STRIP_WIDTH) -> tuple[int, list[int]]:
    """(tile height, tile widths): each image at tile_height with its aspect ratio kept, shrunk
    together (not below MIN_TILE_HEIGHT) when the strip would be wider than max_width."""
    def widths(h: int) -> list[int]:
        return [max(1, round(h * im.width / im.height)) for im in images]

    total = sum(widths(tile_height)) + MARGIN * (len(images) + 1)
    if total > max_width:
        room = max_width - MARGIN * (len(images) + 1)
        ratio = sum(im.width / im.height for im in images)
        tile_height = max(MIN_TILE_HEIGHT, math.floor(room / ratio))
    return tile_height, widths(tile_height)


def make_strip(images: Sequence[Image.Image], captions: Sequence[str], labels: Sequence[str],
               title: str | None = None, tile_height: int = 256) -> Image.Image:
    """The images side by side, left to right, each with its label above and its caption under it.

    Layout (pixels): MARGIN, title line (if any), then per tile: label line, the image at
    tile_height (aspect kept), the caption wrapped to the tile's width; MARGIN between and around.
    The captions are also kept in a PNG text chunk by save_strip."""
    from PIL import Image, ImageDraw

    if not (len(images) == len(captions) == len(labels)) or not images:
        raise ValueError("need one caption and one label per image, and at least one image")
    tile_height, widths = tile_sizes(images, tile_height)
    text_font, title_font = font(FONT_SIZE), font(TITLE_SIZE)
    lh, th = line_height(text_font), line_height(title_font)
    wrapped = [wrap(c, text_font, w) for c, w in zip(captions, widths, strict=True)]
    caption_h = max(len(lines) for lines in wrapped) * lh
    width = sum(widths) + MARGIN * (len(images) + 1)
    title_lines = wrap(title, title_font, width - 2 * MARGIN, max_lines=3) if title else []
    top = MARGIN + (th * len(title_lines) + MARGIN // 2 if title_lines else 0)
    height = top + lh + tile_height + MARGIN // 2 + caption_h + MARGIN
    strip = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for n, line in enumerate(title_lines):
        draw.text((MARGIN, MARGIN + n * th), line, font=title_font, fill=INK)
    x = MARGIN
    for im, lines, label, w in zip(images, wrapped, labels, widths, strict=True):
        draw.text((x, top), label, font=text_font, fill=MUTED)
        strip.paste(im.convert("RGB").resize((w, tile_height), Image.Resampling.LANCZOS), (x, top + lh))
        y = top + lh + tile_height + MARGIN // 2
        for line in lines:
            draw.text((x, y), line, font=text_font, fill=INK)
            y += lh
        x += w + MARGIN
    strip.info[CAPTIONS_CHUNK] = json.dumps(list(captions), ensure_ascii=False)
    return strip


def stack(strips: Sequence[Image.Image], titles: Sequence[str] | None = None) -> Image.Image:
    """Strips one under another, left-aligned on white, each under its title (the index strip)."""
    from PIL import Image, ImageDraw

    title_font = font(TITLE_SIZE)
    th = line_height(title_font) if titles else 0
    width = max(s.width for s in strips) + 2 * MARGIN
    height = MARGIN + sum(s.height + th for s in strips) + MARGIN
    out = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(out)
    y = MARGIN
    for n, s in enumerate(strips):
        if titles:
            draw.text((MARGIN * 2, y), titles[n], font=title_font, fill=INK)
            y += th
        out.paste(s, (MARGIN, y))
        y += s.height
    return out


def save_strip(strip: Image.Image, dest: Path) -> None:
    """PNG, atomically, with the captions (when known) in a text chunk."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if CAPTIONS_CHUNK in strip.info:
        info.add_itxt(CAPTIONS_CHUNK, strip.info[CAPTIONS_CHUNK])
    with atomic_path(dest) as tmp:
        strip.save(tmp, format="PNG", pnginfo=info, optimize=True)


def strip_captions(path: Path) -> list[str]:
    """The captions a strip was drawn with (from its text chunk)."""
    from .pngmeta import read_png_text

    return json.loads(read_png_text(path)[CAPTIONS_CHUNK])


def drift_plot(xs: Sequence[int], series: dict[str, Sequence[float | None]], dest: Path, xlabel: str,
               title: str, subtitle: str = "", mark: tuple[int, str] | None = None) -> None:
    """One line per series (None values are gaps) against xs, y from 0 (or lower) to 1 -> PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    width = min(16.0, max(7.0, 0.35 * len(xs) + 4))
    fig = Figure(figsize=(width, 4.2), dpi=100)
    ax = fig.add_subplot()
    low = 0.0
    styles = ["o-", "s--", "^:"]
    for n, (label, values) in enumerate(series.items()):
        pts = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        if not pts:
            continue
        low = min(low, min(v for _, v in pts))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[n % len(styles)], label=label, markersize=4)
    if mark is not None:
        ax.axvline(mark[0], color="grey", linestyle="--", linewidth=1)
        ax.annotate(mark[1], (mark[0], 1.0), xytext=(4, -12), textcoords="offset points", fontsize=8,
                    color="dimgrey")
    ax.set_ylim(low - 0.05 if low < 0 else 0.0, 1.05)
    ax.set_xlim(min(xs) - 0.3, max(xs) + 0.3 if len(xs) > 1 else min(xs) + 0.3)
    step = max(1, math.ceil(len(xs) / 25))
    ax.set_xticks(list(xs)[::step])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cosine similarity (CLIP)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.suptitle(title, fontsize=11)
    if subtitle:
        ax.set_title(textwrap.fill(subtitle, int(width * 14)), fontsize=8, color="dimgrey")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(buf.getvalue())
