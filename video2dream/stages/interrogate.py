"""interrogate: frames/ -> prompts.csv, one row per frame, written as batches finish.

Each row carries two bookkeeping columns: `settings_key` (which frame and which settings made it)
and `text_hash` (a hash of the prompt and negative prompt as written). A row whose text no longer
matches its hash was edited by hand and is kept unless --force; so is a row edited while this command
runs (prompts.csv is read again before each batch is written, when it changed).

A row belongs to its frame's moment: its `time` must be the frame's time in frames.csv. After the
frames were extracted again (another --fps, --start), a hand-edited row follows its moment to the
frame now at that time, or, when no frame is at that time, is moved to prompts_orphaned.csv and
reported; it is never left on another moment's frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..progress import say
from ..runfolder import RunFolder, read_regular
from ..settings import Settings, key_fields, stable_hash
from ..tables import (
    PROMPTS_COLUMNS,
    moment_tolerance,
    parse_time,
    read_csv,
    read_frames,
    read_loose,
    same_moment,
    write_csv,
)
from ..units import Unit, caption_params

if TYPE_CHECKING:
    import pandas as pd

    from ..backends import Backend, Done
    from ..models.cache import ModelCache

# Never "delete it": the file may hold hand edits.
FIX = ("fix it in an editor or spreadsheet (check the quotes), or rename it (your edits stay in the "
       "renamed file) and run `video2dream interrogate` to write a new one")


@dataclass
class InterrogateResult:
    done: list[str] = field(default_factory=list)
    kept_edited: list[str] = field(default_factory=list)
    up_to_date: int = 0
    dropped: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (old name, new name) of edited rows
    orphaned: list[str] = field(default_factory=list)  # edited rows whose moment has no frame now
    edited_meanwhile: list[str] = field(default_factory=list)  # edited while this command ran


def text_hash(prompt: str, negative_prompt: str) -> str:
    return stable_hash(prompt, negative_prompt, length=12)


def is_edited(row: dict) -> bool:
    return row.get("text_hash") != text_hash(row.get("prompt", ""), row.get("negative_prompt", ""))


def row_keys(run: RunFolder, settings: Settings, names: list[str],
             backend: str | Backend | None = None) -> dict[str, str]:
    """The key each frame's row must carry to be current: the frame's identity plus the settings
    (plus, for a remote backend, its name and model version; default backend: settings.backend)."""
    from ..backends import key_part

    extract_key = (run.read_record("extract") or {}).get("key")
    i = key_fields(settings.interrogate)  # speed knobs (batch and chunk sizes) change no words
    remote = key_part(backend or settings.backend, "caption", settings)  # empty for local: keys as before
    return {n: stable_hash(extract_key, n, i, *([remote] if remote else [])) for n in names}


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


def orphans_path(run: RunFolder) -> Path:
    """Where hand-edited rows without a frame go: prompts_orphaned.csv (prompts_r02_orphaned.csv, ...)."""
    p = run.prompts_csv
    return p.with_name(f"{p.stem}_orphaned{p.suffix}")


@dataclass
class Placement:
    """prompts.csv's rows, each on the frame whose moment it is."""
    rows: dict[str, dict] = field(default_factory=dict)  # frame name -> its row
    states: dict[str, str] = field(default_factory=dict)  # frame name -> current, stale or edited
    moved: list[tuple[str, str]] = field(default_factory=list)
    orphaned: list[dict] = field(default_factory=list)  # rows with the user's words, of moments with no frame
    dropped: list[str] = field(default_factory=list)  # rows the tool wrote for frames that are gone

    @property
    def changed(self) -> bool:
        return bool(self.moved or self.orphaned or self.dropped)


def place_rows(df: pd.DataFrame, keys: dict[str, str], times: dict[str, float]) -> Placement:
    """Put each row on the frame of its moment: its own frame when its time is that frame's (or it has
    no time); else the frame now at its time (after another --fps or --start). A hand-edited row, or
    one with something in the user's own columns, whose moment has no frame is orphaned; a row the tool
    wrote is dropped (it is made again). A row that moved is stale unless edited by hand."""
    tol = moment_tolerance(sorted(times.values()))
    by_time = sorted((t, n) for n, t in times.items())
    p = Placement()
    records = df.to_dict("records")  # not itertuples: it renames columns such as "my notes"
    here = [r["filename"] in keys and same_moment(r.get("time", ""), times[r["filename"]], tol) for r in records]
    # Rows on their own frame first: a row from another moment never displaces one of them unless it
    # was edited by hand and they were not.
    for row, home in sorted(zip(records, here, strict=True), key=lambda pair: not pair[1]):
        name, edited = row["filename"], is_edited(row)
        target = name if home else _frame_at(by_time, parse_time(row.get("time", "")), tol)
        if target is not None and target in p.rows and (p.states[target] == "edited" or not edited):
            target = None  # its frame already has a row that wins
        if target is None:
            if edited or _has_user_data(row):
                p.orphaned.append(row)
            else:
                p.dropped.append(name)
            continue
        if target in p.rows and _has_user_data(p.rows[target]):
            p.orphaned.append(p.rows[target])  # a hand-edited row displaced it: keep the user's cells
        if not home:
            row = {**row, "filename": target, "time": f"{times[target]:.6f}"}
            if edited:
                p.moved.append((name, target))
        p.rows[target] = row
        p.states[target] = ("edited" if edited else
                            "current" if home and row.get("settings_key") == keys[target] else "stale")
    return p


def _has_user_data(row: dict) -> bool:
    return any(str(v).strip() for c, v in row.items() if c not in PROMPTS_COLUMNS)


def _frame_at(by_time: list[tuple[float, str]], t: float | None, tol: float) -> str | None:
    import bisect

    if t is None:
        return None
    i = bisect.bisect_left(by_time, (t - tol, ""))
    return by_time[i][1] if i < len(by_time) and abs(by_time[i][0] - t) <= tol else None


@dataclass
class Table:
    """prompts.csv as this command holds it while it runs: the rows, and what commit needs to keep
    hand edits made meanwhile."""
    names: list[str]
    times: dict[str, float]
    keys: dict[str, str]
    rows: dict[str, dict]
    columns: list[str]
    seen: bytes | None  # the file's bytes as last read or written: a difference is someone else's edit
    placed: Placement
    result: InterrogateResult

    def wanted(self, unit: Unit) -> bool:
        return unit.name not in self.result.edited_meanwhile


def plan_units(run: RunFolder, settings: Settings, force: bool = False,
               backend: str | Backend | None = None, only: list[str] | None = None) -> tuple[list[Unit], Table]:
    """The caption units of the frames whose rows are not current (all with force, hand-edited ones
    aside unless force), and prompts.csv's rows placed on their frames. Loads no model. only: these
    frames alone (by name); the other rows are placed and kept as they are."""
    import pandas as pd

    run.require()
    frames = read_frames(run.frames_csv)
    names = frames["filename"].tolist()
    times = dict(zip(names, frames["time"].tolist(), strict=True))
    keys = row_keys(run, settings, names, backend)
    seen = _file_bytes(run)  # what prompts.csv holds now: a later difference is someone else's edit
    df = read_prompts(run) if seen is not None else pd.DataFrame(columns=PROMPTS_COLUMNS)
    placed = place_rows(df, keys, times)
    states = placed.states
    result = InterrogateResult(dropped=placed.dropped, moved=placed.moved,
                               orphaned=[r["filename"] for r in placed.orphaned])
    result.kept_edited = [] if force else [n for n in names if states.get(n) == "edited"]
    todo = list(names) if force else [n for n in names if states.get(n) not in ("current", "edited")]
    considered = names
    if only is not None:
        from .generate import only_frames

        considered = only_frames(run, only, names)
        todo = [n for n in todo if n in set(considered)]
        result.kept_edited = [n for n in result.kept_edited if n in set(considered)]
    result.up_to_date = len(considered) - len(todo) - len(result.kept_edited)
    knobs = caption_params(settings.interrogate)
    source = run.frames_dir.relative_to(run.root).as_posix()
    units = [Unit(n, "caption", (f"{source}/{n}",), knobs, keys[n]) for n in todo]
    return units, Table(names, times, keys, placed.rows, list(df.columns), seen, placed, result)


def interrogate(run: RunFolder, settings: Settings, force: bool = False,
                on_ready: Callable[[], None] | None = None, models: ModelCache | None = None,
                backend: str | Backend = "local", only: list[str] | None = None) -> InterrogateResult:
    """Write the rows that are not current. models: a cache to take the models from (and leave them
    in); by default they load here. backend: where the units run (a name, or a Backend). only: these
    frames' rows alone (by name)."""
    from .engine import Engine, Stage

    run.require()
    engine = Engine(run, settings, backend, models)
    engine.check_here()  # even with nothing to do: never save a --device that cannot work
    todo, table = plan_units(run, settings, force, backend, only)
    result = table.result
    _report_placement(run, result)
    if not todo:
        if on_ready:
            on_ready()
        if table.placed.changed:
            _save_orphans(run, table.placed.orphaned)
            commit(run, table, [])  # an edit saved since the plan read the file is merged, not lost
        return result

    def commit_batch(run: RunFolder, done: list[Done]) -> list[str]:
        before = len(result.done)
        commit(run, table, done)
        return result.done[before:]

    stage = Stage(f"interrogate ({settings.interrogate.mode})", "caption", "frame", commit_batch=commit_batch)
    # the orphans are saved before prompts.csv loses them
    engine.run_units(stage, todo, on_ready, lambda _runner: _save_orphans(run, table.placed.orphaned),
                     wanted=table.wanted)
    if result.edited_meanwhile:
        result.done = [n for n in result.done if n not in result.edited_meanwhile]
        result.kept_edited += [n for n in result.edited_meanwhile if n not in result.kept_edited]
        say(f"kept {len(result.edited_meanwhile)} row(s) of {run.prompts_csv.name} edited by hand while "
            f"interrogate ran ({', '.join(result.edited_meanwhile[:5])})")
    return result


class _EditedMeanwhile(Exception):
    """prompts.csv changed after this command merged it and before its rename: merge again."""


# How many times in a row an edit may land between the merge and the rename before commit gives up.
MERGE_TRIES = 50


def commit(run: RunFolder, table: Table, done: list[Done]) -> None:
    """Write one batch's rows into prompts.csv; a row edited by hand since this command last read or
    wrote the file wins over ours (and its frame is left out of later batches). The file is compared
    again right before the rename: an edit saved while the batch was merged and written is merged too
    (the rename then follows the comparison within microseconds, not a whole write)."""
    result = table.result
    for _ in range(MERGE_TRIES):
        now = _file_bytes(run)
        theirs = _take_edits(run, table.seen, table.rows, table.columns, table.times, now)
        result.edited_meanwhile += [n for n in theirs if n not in result.edited_meanwhile]
        for unit, (caption, prompt, negative) in done:
            n = unit.name
            if n in result.edited_meanwhile:
                continue
            row = table.rows.get(n, {})
            row.update(filename=n, prompt=prompt, time=f"{table.times[n]:.6f}", caption=caption,
                       negative_prompt=negative, settings_key=unit.key, text_hash=text_hash(prompt, negative))
            table.rows[n] = row
            if n not in result.done:
                result.done.append(n)
        done = []  # ours are in table.rows now; a later merge may still replace one by an edit
        table.seen = now

        def unchanged(merged: bytes | None = now) -> None:
            if _file_bytes(run) != merged:
                raise _EditedMeanwhile

        try:
            table.seen = _write(run, table.rows, table.names, table.columns, unchanged)
            return
        except _EditedMeanwhile:
            continue
    raise UserError(f"{run.prompts_csv} kept changing while interrogate wrote it ({MERGE_TRIES} times in a row); "
                    "it was left as it is: save your edits, then run `video2dream interrogate` again")


def _report_placement(run: RunFolder, result: InterrogateResult) -> None:
    name = run.prompts_csv.name
    if result.moved:
        shown = ", ".join(f"{a} -> {b}" for a, b in result.moved[:5])
        say(f"moved {len(result.moved)} hand-edited row(s) of {name} to the frame now at their time "
            f"(the frames were extracted again): {shown}")
    if result.kept_edited:
        say(f"kept {len(result.kept_edited)} hand-edited row(s) of {name} "
            f"({', '.join(result.kept_edited[:5])}); --force writes them again")
    if result.orphaned:
        say(f"{len(result.orphaned)} row(s) of {name} with your edits are for moments that have no frame now "
            f"({', '.join(result.orphaned[:5])}); they are kept in {orphans_path(run)}")
    if result.dropped:
        say(f"dropping {len(result.dropped)} row(s) of {name} written for frames or moments that do not exist "
            f"({', '.join(result.dropped[:5])})")


def _file_bytes(run: RunFolder) -> bytes | None:
    try:
        return read_regular(run.prompts_csv)  # a FIFO there is one line, not a hang
    except FileNotFoundError:
        return None


def _take_edits(run: RunFolder, seen: bytes | None, rows: dict[str, dict], columns: list[str],
                times: dict[str, float], now: bytes | None) -> list[str]:
    """Rows of prompts.csv edited by hand since this command last read or wrote it: they replace ours
    (in rows), and new columns join columns. The names of those rows; none when the file is as we left
    it (now: its bytes as just read)."""
    if now is None or now == seen:
        return []
    try:
        df = read_prompts(run)
    except UserError as e:
        raise UserError(f"{run.prompts_csv} was changed while interrogate ran and cannot be read now ({e}); "
                        "it was left as it is: fix it, then run `video2dream interrogate` again") from None
    columns += [c for c in df.columns if c not in columns]
    tol = moment_tolerance(sorted(times.values()))
    theirs = []
    for row in df.to_dict("records"):
        n = row["filename"]
        if n not in times or not same_moment(row.get("time", ""), times[n], tol):
            continue  # another moment's row (one this command moves or orphans): not this frame's
        ours = rows.get(n)
        if ours is not None:
            ours.update({c: v for c, v in row.items() if c not in PROMPTS_COLUMNS})  # their own columns
        same_text = ours is not None and (ours.get("prompt"), ours.get("negative_prompt")) == \
            (row["prompt"], row["negative_prompt"])
        if is_edited(row) and not same_text:
            rows[n] = row
            theirs.append(n)
    return theirs


def _save_orphans(run: RunFolder, orphaned: list[dict]) -> None:
    """Append hand-edited rows that have no frame now to prompts_orphaned.csv: nothing typed is lost."""
    import pandas as pd

    if not orphaned:
        return
    path = orphans_path(run)
    rows = read_loose(path).to_dict("records") if path.is_file() and path.stat().st_size else []
    rows += orphaned
    header = list(dict.fromkeys(c for r in rows for c in r))
    table = pd.DataFrame([{c: r.get(c, "") for c in header} for r in rows], columns=header)
    write_csv(path, table.drop_duplicates())  # a run killed before prompts.csv was written adds them again


def _write(run: RunFolder, rows: dict[str, dict], names: list[str], columns: list[str],
           before_replace: Callable[[], None] | None = None) -> bytes:
    """Write prompts.csv; the bytes written (to notice a hand edit before the next write)."""
    import pandas as pd

    header = PROMPTS_COLUMNS + [c for c in columns if c not in PROMPTS_COLUMNS]  # the user's own columns stay
    out = pd.DataFrame([{c: rows[n].get(c, "") for c in header} for n in names if n in rows], columns=header)
    return write_csv(run.prompts_csv, out, before_replace).encode("utf-8")


def status_data(run: RunFolder, settings: Settings) -> dict[str, Any]:
    """prompts.csv's rows against the frames, as data (for `status` and `status --json`)."""
    if not run.prompts_csv.exists():
        return {"state": "not run"}
    frames = read_frames(run.frames_csv)
    names = frames["filename"].tolist()
    try:
        df = read_prompts(run)
    except UserError as e:
        return {"state": "error", "error": f"prompts.csv unreadable: {e}"}
    placed = place_rows(df, row_keys(run, settings, names), dict(zip(names, frames["time"], strict=True)))
    which = {s: [n for n in names if placed.states.get(n) == s] for s in ("current", "edited", "stale")}
    missing = [n for n in names if n not in placed.states]
    return {
        "state": "stale" if which["stale"] else "missing" if missing else "current",
        "total": len(names), "current": len(which["current"]), "edited": which["edited"],
        "stale": which["stale"], "missing": missing,
        "elsewhere": [name for name, _ in placed.moved] + [str(r["filename"]) for r in placed.orphaned],
    }


def status_line(d: dict[str, Any]) -> str:
    if d["state"] in ("not run", "error"):
        return d.get("error", d["state"])
    line = (f"{d['current']}/{d['total']} rows current, {len(d['edited'])} edited by hand, "
            f"{len(d['stale'])} stale, {len(d['missing'])} missing")
    if d["elsewhere"]:
        line += f"; {len(d['elsewhere'])} hand-edited row(s) are for other moments (interrogate moves them)"
    return line
