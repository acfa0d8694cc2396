"""interrogate: frames/ -> prompts.csv, one row per frame, written as batches finish.

Each row carries two bookkeeping columns: `settings_key` (which frame and which settings made it)
and `text_hash` (a hash of the prompt and negative prompt as written). A row whose text no longer
matches its hash was edited by hand and is kept unless --force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import UserError
from ..progress import progress_bar, say
from ..runfolder import RunFolder
from ..settings import Settings, stable_hash
from ..tables import PROMPTS_COLUMNS, read_csv, read_frames, write_csv

if TYPE_CHECKING:
    import pandas as pd

    from ..models.cache import ModelCache

FIX = "delete prompts.csv and run `video2dream interrogate` to write it again"


@dataclass
class InterrogateResult:
    done: list[str] = field(default_factory=list)
    kept_edited: list[str] = field(default_factory=list)
    up_to_date: int = 0
    dropped: list[str] = field(default_factory=list)


def text_hash(prompt: str, negative_prompt: str) -> str:
    return stable_hash(prompt, negative_prompt, length=12)


def row_keys(run: RunFolder, settings: Settings, names: list[str]) -> dict[str, str]:
    """The key each frame's row must carry to be current: the frame's identity plus the settings."""
    extract_key = (run.read_record("extract") or {}).get("key")
    i = dataclasses.asdict(settings.interrogate)
    for irrelevant in ("batch_size", "chunk_size"):  # they change speed, not the words
        i.pop(irrelevant)
    return {n: stable_hash(extract_key, n, i) for n in names}


def read_prompts(run: RunFolder) -> pd.DataFrame:
    df = read_csv(run.prompts_csv, ["filename", "prompt"], FIX)
    for column in PROMPTS_COLUMNS:
        if column not in df.columns:
            df[column] = ""
    for column in ("prompt", "negative_prompt"):
        # An editor that saves CRLF line ends (Notepad) puts them inside multi-line cells too: the
        # same words, so the same prompt (and no repaint).
        df[column] = df[column].str.replace("\r\n", "\n", regex=False).str.replace("\r", "\n", regex=False)
    return df


def row_states(df: pd.DataFrame, keys: dict[str, str]) -> dict[str, str]:
    """filename -> 'current', 'stale', 'edited' or 'orphan' (no such frame)."""
    states = {}
    for row in df.itertuples(index=False):
        name = row.filename
        if name not in keys:
            states[name] = "orphan"
        elif row.text_hash != text_hash(row.prompt, row.negative_prompt):
            states[name] = "edited"
        elif row.settings_key == keys[name]:
            states[name] = "current"
        else:
            states[name] = "stale"
    return states


def interrogate(run: RunFolder, settings: Settings, force: bool = False,
                on_ready: Callable[[], None] | None = None, models: ModelCache | None = None) -> InterrogateResult:
    """models: a cache to take the models from (and leave them in); by default they load here."""
    import pandas as pd

    run.require()
    frames = read_frames(run.frames_csv)
    names = frames["filename"].tolist()
    times = dict(zip(names, frames["time"].tolist(), strict=True))
    keys = row_keys(run, settings, names)
    from ..models.devices import check_device

    check_device(settings.device, settings.dtype)  # even with nothing to do: never save a --device that cannot work
    df = read_prompts(run) if run.prompts_csv.exists() else pd.DataFrame(columns=PROMPTS_COLUMNS)
    states = row_states(df, keys)
    result = InterrogateResult()
    result.dropped = [n for n, s in states.items() if s == "orphan"]
    result.kept_edited = [] if force else [n for n in names if states.get(n) == "edited"]
    todo = [n for n in names if states.get(n) != "current" and n not in result.kept_edited]
    if force:
        todo = list(names)
    result.up_to_date = len(names) - len(todo) - len(result.kept_edited)
    if result.kept_edited:
        say(f"kept {len(result.kept_edited)} hand-edited row(s) of prompts.csv "
            f"({', '.join(result.kept_edited[:5])}); --force writes them again")
    if result.dropped:
        say(f"dropping {len(result.dropped)} row(s) of prompts.csv for frames that do not exist "
            f"({', '.join(result.dropped[:5])})")
    rows = {r.filename: r._asdict() for r in df.itertuples(index=False) if r.filename in keys}
    if not todo:
        if on_ready:
            on_ready()
        if result.dropped:
            _write(run, rows, names, df.columns)
        return result

    i = settings.interrogate
    from ..models.cache import ModelCache

    models = models or ModelCache()
    captioner = models.captioner(settings)
    interrogator = models.interrogator(settings) if i.mode != "caption" else None
    if on_ready:
        on_ready()
    from PIL import Image

    with progress_bar(total=len(todo), desc=f"interrogate ({i.mode})", unit="frame") as bar:
        for start in range(0, len(todo), i.batch_size):
            batch = todo[start:start + i.batch_size]
            images = []
            for n in batch:
                with Image.open(run.frames_dir / n) as im:
                    images.append(im.convert("RGB"))
            captions = captioner.caption(images, min_length=i.min_length, max_length=i.max_length,
                                         num_beams=i.num_beams, no_repeat_ngram_size=i.no_repeat_ngram_size)
            if interrogator is None:
                pairs = [(c, "") for c in captions]
            else:
                pairs = interrogator.interrogate(images, captions, i.mode)
            for n, caption, (prompt, negative) in zip(batch, captions, pairs, strict=True):
                row = rows.get(n, {})
                row.update(filename=n, prompt=prompt, time=f"{times[n]:.6f}", caption=caption,
                           negative_prompt=negative, settings_key=keys[n],
                           text_hash=text_hash(prompt, negative))
                rows[n] = row
            _write(run, rows, names, df.columns)  # a killed run keeps every finished batch
            result.done += batch
            bar.update(len(batch))
    return result


def _write(run: RunFolder, rows: dict[str, dict], names: list[str], columns: pd.Index) -> None:
    import pandas as pd

    extra = [c for c in columns if c not in PROMPTS_COLUMNS]  # the user's own columns stay
    ordered = [rows[n] for n in names if n in rows]
    out = pd.DataFrame(ordered, columns=PROMPTS_COLUMNS + extra).fillna("")
    write_csv(run.prompts_csv, out)


def status(run: RunFolder, settings: Settings) -> str:
    if not run.prompts_csv.exists():
        return "not run"
    names = read_frames(run.frames_csv)["filename"].tolist()
    try:
        df = read_prompts(run)
    except UserError as e:
        return f"prompts.csv unreadable: {e}"
    states = row_states(df, row_keys(run, settings, names))
    counts = {s: sum(1 for n in names if states.get(n) == s) for s in ("current", "stale", "edited")}
    missing = sum(1 for n in names if n not in states)
    return (f"{counts['current']}/{len(names)} rows current, {counts['edited']} edited by hand, "
            f"{counts['stale']} stale, {missing} missing")
