"""frames.csv and prompts.csv: read strictly (clear errors), written atomically.

Both are plain CSV meant to be opened in a spreadsheet or an editor: UTF-8, a header row, quotes
only where needed. A byte-order mark (Excel's "CSV UTF-8") is accepted when reading, and so is a
file a spreadsheet saved with `;` or tabs between the cells (many locales do); the tool writes `,`.

Nothing read from a table is trusted as a path: every `filename` must be a frame name of the tool's
own form (checked here, once, for every table). Free-text cells that a spreadsheet would take for a
formula are written with a leading `'` and read back without it (see escape_cell).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .runfolder import check_regular, write_text

if TYPE_CHECKING:
    import pandas as pd

FRAMES_COLUMNS = ["filename", "time"]
PROMPTS_COLUMNS = ["filename", "prompt", "time", "caption", "negative_prompt", "settings_key", "text_hash"]

# A frame (and a dream) is NNNNNN.png: 6 or more ASCII digits. Nothing else may name a file, so a
# table can never point outside its folder (no '/', '..', NUL or newline can pass).
FRAME_NAME = re.compile(r"[0-9]{6,}\.png")

# Text a spreadsheet may read as a formula when it starts with one of these (OWASP's list).
# write_csv escapes every text cell of every table (refused.csv's error is the service's text), and
# read_csv and read_loose unescape every column: a user's own column round-trips too.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")  # what escape_cell prefixes: a formula start after any quotes
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")  # what unescape_cell strips one quote from
DELIMITERS = (",", ";", "\t")


def escape_cell(text: str) -> str:
    """'=1+1' for '=1+1': a spreadsheet shows text, not a formula. Text that already starts with
    quotes before such a character gets one more, so unescape_cell always gives back the original."""
    return "'" + text if _FORMULA.match(text) else text


def unescape_cell(text: str) -> str:
    return text[1:] if _ESCAPED.match(text) else text


def sniff_delimiter(path: Path, first: str) -> str:
    """The delimiter whose split of the header line has the column `first` (',' when none does:
    then pandas' error names the real problem)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            head = f.readline()
    except (OSError, UnicodeDecodeError):
        return ","
    for d in DELIMITERS:
        cells = next(csv.reader([head], delimiter=d), [])
        if first in (c.strip() for c in cells):
            return d
    return ","


def _shown(name: str) -> str:
    return repr(name if len(name) <= 60 else name[:57] + "...")  # repr: a NUL or newline is visible


def check_names(path: Path, names: list[str], fix: str) -> None:
    """Every name is a frame name: anything else could make a path outside the run folder."""
    for i, name in enumerate(names):
        if not FRAME_NAME.fullmatch(name):
            raise UserError(f"{path}, row {i + 2} (the header is row 1): the filename {_shown(name)} is not a "
                            f"frame name (digits and .png, as in 000001.png); {fix}")


def _too_many_cells(path: Path, sep: str, fix: str) -> str:
    """The message for a table whose rows have more cells than its header has columns."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter=sep)
        header = next(rows, [])
        number, row = next(((n, r) for n, r in enumerate(rows, start=2) if len(r) > len(header)), (2, header))
    comma = {",": "comma", ";": "semicolon", "\t": "tab"}[sep]
    return (f"{path}, row {number} (the header is row 1) has {len(row)} cells but the header names {len(header)} "
            f"columns: an extra cell, or a {comma} in a text that is not in double quotes; {fix}")


def read_csv(path: Path, required: list[str], fix: str) -> pd.DataFrame:
    import pandas as pd

    check_regular(path)  # a FIFO would block the read, a folder fail in pandas
    if not path.is_file():
        raise UserError(f"{path} is missing; {fix}")
    sep = sniff_delimiter(path, required[0])
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep=sep)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty; {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet), "
                        f"or {fix}") from None
    except (pd.errors.ParserError, ValueError) as e:
        detail = " ".join(str(e).split())
        raise UserError(f"{path} is not a readable CSV ({detail}); {fix}") from None
    if not isinstance(df.index, pd.RangeIndex):  # every row longer than the header: pandas made an index of it
        raise UserError(_too_many_cells(path, sep, fix))
    df.columns = [str(c).strip() if str(c).strip() in required else c for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; its header must start with "
                        f"{','.join(required)}; {fix}")
    check_names(path, df["filename"].tolist(), fix)
    if df["filename"].duplicated().any():
        dup = df.loc[df["filename"].duplicated(), "filename"].iloc[0]
        raise UserError(f"{path} lists {dup} more than once; keep one row per frame")
    for column in df.columns:  # write_csv escapes every text cell (a user's own columns too)
        df[column] = df[column].map(lambda v: unescape_cell(v) if isinstance(v, str) else v)
    return df


def write_csv(path: Path, df: pd.DataFrame, before_replace: Callable[[], None] | None = None) -> str:
    """Write df (every text cell a spreadsheet would take for a formula escaped: refused.csv's error
    text is the service's); the text written, to tell later whether someone changed it.
    before_replace: see runfolder.atomic_path."""
    out = df.copy()
    for column in out.columns:
        out[column] = out[column].map(lambda v: escape_cell(v) if isinstance(v, str) else v)
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\n")
    write_text(path, buf.getvalue(), before_replace)
    return buf.getvalue()


def parse_time(text: object) -> float | None:
    """A time cell as seconds; None when empty or not a number. A decimal comma (a spreadsheet in a
    `;` locale writes 1,5) is read as a point."""
    try:
        t = float(str(text).strip().replace(",", "."))
    except ValueError:
        return None
    return t if math.isfinite(t) else None


def moment_tolerance(times: list[float]) -> float:
    """How far a row's time may be from its frame's and still be the same moment: a millisecond
    (times are written with 6 decimals; a spreadsheet may keep fewer), less for frames closer than that."""
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
    return min([1e-3] + [g / 4 for g in gaps])


def same_moment(cell: object, frame_time: float, tolerance: float) -> bool:
    """Whether a row's time cell is its frame's moment; a row without a time (made by hand) is."""
    t = parse_time(cell)
    return t is None or abs(t - frame_time) <= tolerance


def read_loose(path: Path) -> pd.DataFrame:
    """A table the tool only appends to (prompts_orphaned.csv): no checks of its rows."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                         sep=sniff_delimiter(path, "filename"))
    except (pd.errors.ParserError, ValueError) as e:
        detail = " ".join(str(e).split())
        raise UserError(f"{path} is not a readable CSV ({detail}); fix it, or rename it to keep it") from None
    for column in df.columns:  # write_csv escapes every text cell (a user's own columns too)
        df[column] = df[column].map(lambda v: unescape_cell(v) if isinstance(v, str) else v)
    return df


def read_frames(path: Path) -> pd.DataFrame:
    df = read_csv(path, FRAMES_COLUMNS, "run `video2dream extract` again")
    try:
        df["time"] = df["time"].astype(float)
    except ValueError:
        raise UserError(f"{path}: the time column must hold numbers (seconds); run extract again") from None
    if not df["time"].is_monotonic_increasing:
        raise UserError(f"{path}: times must increase from row to row; run extract again")
    _read_kinds(path, df)
    return df


# What a keyframe is (frames.csv's `kind`): on the 1/fps clock, on a beat, or the first frame of a
# shot. A frames.csv made before the column existed (or a cell left empty) holds ticks.
FRAME_KINDS = ("tick", "beat", "cut")


def _read_kinds(path: Path, df: pd.DataFrame) -> None:
    if "kind" not in df.columns:
        df["kind"] = "tick"
        return
    df["kind"] = df["kind"].map(lambda v: str(v).strip().lower() or "tick")
    odd = df.index[~df["kind"].isin(FRAME_KINDS)]
    if len(odd):
        row = int(odd[0])
        raise UserError(f"{path}, row {row + 2} (the header is row 1): kind {_shown(df['kind'][row])} is not one of "
                        f"{', '.join(FRAME_KINDS)}; fix it, or run extract again")


def frames_table(filenames: list[str], times: list[float], kinds: list[str] | None = None) -> pd.DataFrame:
    import pandas as pd

    kinds = kinds if kinds is not None else ["tick"] * len(filenames)
    return pd.DataFrame({"filename": filenames, "time": [f"{t:.6f}" for t in times], "kind": kinds})
