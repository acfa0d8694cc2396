"""Styles: the look a dream is painted in, on top of its row's words (which stay as written).

A style is a template where `{prompt}` stands for the words it wraps ("oil painting of {prompt}"); a
style without `{prompt}` is appended after a comma ("oil painting"). `--style` / `--negative-style`
apply to every dream; `styles.csv` in the run folder applies styles to ranges of the source's time
or to shots:

    start,end,style,negative_style
    10,20.5,underwater,
    shot 3,,neon {prompt},blurry

Times are seconds of the source, both ends inclusive; `shot N` (start) with `end` empty is the N-th
shot (shots are counted between the `cut` rows of frames.csv; shot 1 starts at the first frame).
A dream's prompt is its row's words, then --style, then each range that holds its time in file order
(each template wraps the result of the one before).
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .tables import _shown, parse_time, sniff_delimiter, unescape_cell

STYLES_CSV = "styles.csv"
HEADER = ["start", "end", "style", "negative_style"]
MAX_BYTES = 1 << 20  # a table of styles is a few lines; a bigger file is not one
MAX_ROWS = 10_000
SHOT = re.compile(r"shot\s+([0-9]{1,9})", re.IGNORECASE)
FIX = "fix that row, or delete it"


def apply_style(template: str | None, words: str) -> str:
    """words wrapped by template: `{prompt}` replaced (plain text: braces elsewhere are the user's),
    else the template appended after a comma; no template, or an empty one: words as they are."""
    template = (template or "").strip()
    if not template:
        return words
    if "{prompt}" in template:
        return template.replace("{prompt}", words)
    return ", ".join(t for t in (words.strip(), template) if t)


@dataclass(frozen=True)
class StyleRange:
    row: int  # its row in styles.csv (the header is row 1), for messages
    start: float
    end: float
    style: str
    negative_style: str

    def holds(self, t: float, tolerance: float = 1e-6) -> bool:
        return self.start - tolerance <= t <= self.end + tolerance


def styles_path(root: Path) -> Path:
    return Path(root) / STYLES_CSV


def read_styles(root: Path, times: list[float], kinds: list[str], duration: float | None) -> list[StyleRange]:
    """styles.csv's ranges in file order (none when there is no such file), strictly checked: a bad
    header, time or shot, or a range outside the video, is one error naming the row.
    times, kinds: frames.csv's (source seconds; tick, beat, cut); duration: the source's, if known."""
    path = styles_path(root)
    text = _read_text(path)
    if text is None:
        return []
    sep = sniff_delimiter(path, "start")
    rows = list(csv.reader(io.StringIO(text), delimiter=sep))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip() for c in rows[0]]
    if header[:len(HEADER)] != HEADER:
        raise UserError(f"{path}: the header must be {','.join(HEADER)}, got {_shown(','.join(header))}; fix it")
    if len(rows) - 1 > MAX_ROWS:
        raise UserError(f"{path} has {len(rows) - 1} rows, more than {MAX_ROWS}; keep fewer ranges")
    shots = shot_spans(times, kinds)
    last = max(times) if times else 0.0
    end_of_video = max(duration or 0.0, last)
    out = []
    for i, cells in enumerate(rows[1:], start=2):
        cells = [*cells, *[""] * (len(HEADER) - len(cells))]
        start_cell, end_cell = cells[0].strip(), cells[1].strip()
        where = f"{path}, row {i} (the header is row 1)"
        shot = SHOT.fullmatch(start_cell)
        if shot:
            n = int(shot.group(1))
            if end_cell:
                raise UserError(f"{where}: `shot {n}` takes the whole shot, so end must be empty, "
                                f"got {_shown(end_cell)}; {FIX}")
            if not 1 <= n <= len(shots):
                raise UserError(f"{where}: there is no shot {n} (the video has {len(shots)} shot(s) between "
                                f"the cuts extract found); {FIX}")
            start, end = shots[n - 1]
        else:
            start, end = parse_time(start_cell), parse_time(end_cell)
            if start is None or end is None or start < 0 or end < start:
                raise UserError(f"{where}: start and end must be seconds of the source with start <= end "
                                f"(or `shot N` in start and end empty), got {_shown(start_cell)} and "
                                f"{_shown(end_cell)}; {FIX}")
            if start > end_of_video:
                raise UserError(f"{where}: the range {start:g}-{end:g} s starts after the video ends "
                                f"({end_of_video:g} s); {FIX}")
        style, negative = (unescape_cell(c) for c in cells[2:4])
        out.append(StyleRange(i, start, end, style, negative))
    return out


def _read_text(path: Path) -> str | None:
    """styles.csv's text: a regular file (not a link, a pipe or a folder), UTF-8, at most MAX_BYTES."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path} is not a plain file (a link, a folder or a pipe); make it a plain CSV file")
    if st.st_size > MAX_BYTES:
        raise UserError(f"{path} is {st.st_size} bytes, more than {MAX_BYTES}; a table of styles is a few lines")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise UserError(f"{path} is more than {MAX_BYTES} bytes; a table of styles is a few lines")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet)") from None


def shot_spans(times: list[float], kinds: list[str]) -> list[tuple[float, float]]:
    """Each shot's first and last keyframe time: a new shot at every `cut` row (the first frame starts shot 1)."""
    spans: list[list[float]] = []
    for i, (t, kind) in enumerate(zip(times, kinds, strict=True)):
        if i == 0 or kind == "cut":
            spans.append([t, t])
        else:
            spans[-1][1] = t
    return [(a, b) for a, b in spans]


def styled(prompt: str, negative: str, style: str | None, negative_style: str | None,
           ranges: list[StyleRange], time: float) -> tuple[str, str, list[list[str]]]:
    """The prompt and negative prompt as painted at this time, and the ranges' styles that applied
    (for the key: empty when none did, so that other dreams' keys stay as they were)."""
    prompt, negative = apply_style(style, prompt), apply_style(negative_style, negative)
    applied = []
    for r in ranges:
        if r.holds(time):
            prompt, negative = apply_style(r.style, prompt), apply_style(r.negative_style, negative)
            applied.append([r.style, r.negative_style])
    return prompt, negative, applied
