"""frames.csv and prompts.csv: read strictly (clear errors), written atomically.

Both are plain CSV meant to be opened in a spreadsheet or an editor: UTF-8, a header row, quotes
only where needed. A byte-order mark (Excel's "CSV UTF-8") is accepted when reading.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .runfolder import write_text

if TYPE_CHECKING:
    import pandas as pd

FRAMES_COLUMNS = ["filename", "time"]
PROMPTS_COLUMNS = ["filename", "prompt", "time", "caption", "negative_prompt", "settings_key", "text_hash"]


def read_csv(path: Path, required: list[str], fix: str) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise UserError(f"{path} is missing; {fix}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty; {fix}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        detail = " ".join(str(e).split())
        raise UserError(f"{path} is not a readable CSV ({detail}); fix it (check quotes) or {fix}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; its header must start with "
                        f"{','.join(required)}; {fix}")
    if df["filename"].duplicated().any():
        dup = df.loc[df["filename"].duplicated(), "filename"].iloc[0]
        raise UserError(f"{path} lists {dup} more than once; keep one row per frame")
    return df


def write_csv(path: Path, df: pd.DataFrame) -> None:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    write_text(path, buf.getvalue())


def read_frames(path: Path) -> pd.DataFrame:
    df = read_csv(path, FRAMES_COLUMNS, "run `video2dream extract` again")
    try:
        df["time"] = df["time"].astype(float)
    except ValueError:
        raise UserError(f"{path}: the time column must hold numbers (seconds); run extract again") from None
    if not df["time"].is_monotonic_increasing:
        raise UserError(f"{path}: times must increase from row to row; run extract again")
    return df


def frames_table(filenames: list[str], times: list[float]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"filename": filenames, "time": [f"{t:.6f}" for t in times]})
