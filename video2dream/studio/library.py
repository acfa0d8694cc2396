"""Everything the review page asks of the library, in one module: progress, the lock, the row edit
and the jobs, all through the library's own calls (video2dream.pipeline.do_*, edit_row).

Progress: a PageReporter (video2dream.report) passed to the do_* call turns the engine's events into
the page's. Cancel is Ctrl-C at the reporter's unit-done seam: the engine reports a unit once it is
committed (written into the run folder), and the reporter raises Canceled there, so the unit in
flight finishes and nothing made is lost. The lock is the library calls' own; this module adds a
lock of this process (one write of the page at a time: the library's lock is re-entrant within a
process, so two of the page's threads would not exclude each other through it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .. import report
from ..errors import Interrupted, SettingError, UserError
from ..runfolder import RunFolder
from ..settings import Settings, resolve

JOBS = ("repaint", "recaption", "inbetweens", "assemble", "variants")
MAX_PAGE_VARIANTS = 8  # candidates per keyframe a page's click may ask for


class RowChanged(UserError):
    """The row was changed (by another tab, an editor or a command) since the page read it."""


class Canceled(Interrupted):
    """The page's cancel: raised at the first unit-done report after the cancel (that unit is written)."""


class Busy(UserError):
    """Another of the page's writes (a job, an edit, a pick) is in progress in this server."""


_writing = threading.Lock()  # one write of the page at a time in this process


@contextlib.contextmanager
def _one_write() -> Iterator[None]:
    if not _writing.acquire(blocking=False):
        raise Busy("a job is running on this folder; wait for it to finish (or cancel it), then try again")
    try:
        yield
    finally:
        _writing.release()


# -- progress --------------------------------------------------------------------------------------


class PageReporter(report.Reporter):
    """The engine's events as the page's: {"type": "progress", desc, n, total, unit, name} per unit,
    {"type": "line", text} per message. cancel: set by the page; the next unit done raises Canceled."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], cancel: threading.Event | None = None) -> None:
        self.emit = emit
        self.cancel = cancel or threading.Event()
        self._lock = threading.Lock()  # a backend's worker threads may report too
        self._stages: dict[str, dict[str, Any]] = {}

    def say(self, message: str) -> None:
        self.emit({"type": "line", "text": message})

    def stage(self, stage: str, total: int, unit: str) -> None:
        with self._lock:
            self._stages[stage] = {"n": 0, "total": total, "unit": unit, "failed": 0}
        self.emit({"type": "progress", "desc": stage, "n": 0, "total": total, "unit": unit})

    def unit_done(self, stage: str, name: str) -> None:
        with self._lock:
            s = self._stages.setdefault(stage, {"n": 0, "total": 0, "unit": "it", "failed": 0})
            s["n"] += 1
            event = {"type": "progress", "desc": stage, "n": s["n"], "total": s["total"], "unit": s["unit"],
                     "name": name}
        self.emit(event)
        if self.cancel.is_set():
            raise Canceled("canceled from the review page")

    def unit_failed(self, stage: str, name: str, error: str) -> None:
        with self._lock:
            self._stages.setdefault(stage, {"n": 0, "total": 0, "unit": "it", "failed": 0})["failed"] += 1

    def finished(self, stage: str, done: int) -> None:
        with self._lock:
            failed = self._stages.get(stage, {}).get("failed", 0)
        self.emit({"type": "finished", "desc": stage, "done": done, "not_made": failed})


# -- the lock --------------------------------------------------------------------------------------


def lock_holder(run: RunFolder) -> dict[str, Any] | None:
    """Who holds the folder now (a CLI command, or this server's own job); None when free."""
    return run.lock_holder()


# -- settings --------------------------------------------------------------------------------------


def settings_for(run: RunFolder, overrides: dict[str, Any] | None = None) -> Settings:
    """The folder's settings with the page's values over them, checked as the CLI checks flags."""
    if overrides is not None and not isinstance(overrides, dict):
        raise SettingError("settings", "must be an object of sections, e.g. {\"generate\": {\"steps\": 4}}")
    return resolve(run.saved_settings(), None, None, overrides or None)


# -- the row edit ----------------------------------------------------------------------------------


def row_version(row: dict[str, Any]) -> str:
    from ..settings import stable_hash

    return stable_hash(*(f"{k}={row[k]}" for k in sorted(row)), length=16)


def read_rows(run: RunFolder) -> dict[str, dict[str, Any]]:
    """prompts.csv's rows by filename, read as the library's edit_row reads it (strict names,
    formula escapes): a row's version is computed on the same cells."""
    from ..stages.interrogate import FIX
    from ..tables import read_csv

    df = read_csv(run.prompts_csv, ["filename", "prompt"], FIX)
    return {r["filename"]: r for r in df.to_dict("records")}


def _row(run: RunFolder, filename: str) -> dict[str, Any] | None:
    return read_rows(run).get(filename)


def check_text(what: str, text: Any, *, required: bool) -> str:
    if not isinstance(text, str):
        raise UserError(f"{what} must be text")
    if "\x00" in text:
        raise UserError(f"{what} holds a NUL character; remove it")
    if len(text) > 20000:
        raise UserError(f"{what} is {len(text)} characters long; keep it under 20000")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if required and not text.strip():
        raise UserError(f"{what} is empty; write one (generate refuses an empty prompt)")
    return text


def edit_row(run: RunFolder, filename: str, prompt: str | None = None, negative_prompt: str | None = None,
             version: str | None = None) -> str:
    """The library's hand edit of prompts.csv's row (pipeline.edit_row), under the folder's lock,
    with the page's check first: version is the row's version as the page read it; a different one
    now (another tab, an editor, a command) raises RowChanged and nothing is written. The new version."""
    from .. import pipeline

    if prompt is not None:
        prompt = check_text("the prompt", prompt, required=True)
    if negative_prompt is not None:
        negative_prompt = check_text("the negative prompt", negative_prompt, required=False)
    with _one_write(), pipeline.locked(run):  # the check and the write under one hold of the lock
        row = _row(run, filename)
        if row is None:
            raise UserError(f"{run.prompts_csv.name} has no row for {filename}; run `video2dream interrogate` first")
        if version is not None and row_version(row) != version:
            raise RowChanged(f"the row of {filename} was changed since this page read it (another tab, an editor "
                             "or a command); reload it, then make your edit again")
        pipeline.edit_row(run, filename, prompt, negative_prompt)
        row = _row(run, filename)
        assert row is not None
        return row_version(row)


# -- the jobs --------------------------------------------------------------------------------------


def edited_rows(run: RunFolder, names: list[str]) -> list[str]:
    """Which of names are hand-edited rows (a re-caption would replace them)."""
    from ..stages.interrogate import is_edited, read_prompts

    rows = {r["filename"]: r for r in read_prompts(run).to_dict("records")} if run.prompts_csv.is_file() else {}
    return [n for n in names if n in rows and is_edited(rows[n])]


def run_job(kind: str, run: RunFolder, settings: Settings, names: list[str] | None, reporter: report.Reporter,
            count: int | None = None) -> None:
    """One job: the CLI's own library call, which takes the folder's lock, reporting to reporter.
    names: the rows of a repaint, re-caption or variants (None: every stale one, as the CLI command
    does). A re-caption of chosen rows replaces their words (the page asked before a hand edit)."""
    from .. import pipeline

    if kind not in JOBS:
        raise UserError(f"unknown job {kind!r}; the page runs {', '.join(JOBS)}")
    with _one_write():
        if kind == "repaint":
            pipeline.do_generate(run, settings, only=names, reporter=reporter)
        elif kind == "recaption":
            pipeline.do_interrogate(run, settings, force=names is not None, only=names, reporter=reporter)
        elif kind == "inbetweens":
            pipeline.do_morph(run, settings, reporter=reporter)
        elif kind == "variants":
            rows = ",".join(str(int(n.split(".")[0])) for n in names) if names else None
            pipeline.do_variants(run, settings, count or 4, rows, reporter=reporter)
        else:
            pipeline.do_assemble(run, settings, reporter=reporter)


def candidates(run: RunFolder, name: str) -> list[dict[str, Any]]:
    """The frame's candidates in variants/ (of `generate --variants K`): number, file and seed."""
    import re

    from ..runfolder import is_regular
    from ..stages.variants import candidate_seed, variants_dir

    folder = variants_dir(run)
    if not folder.is_dir() or folder.is_symlink():
        return []
    stem = name.rsplit(".", 1)[0]
    out = []
    for path in sorted(folder.glob(f"{stem}_*.png")):
        m = re.fullmatch(re.escape(stem) + r"_([0-9]{2})\.png", path.name)
        if m and is_regular(path):
            out.append({"number": int(m.group(1)), "file": f"variants/{path.name}", "seed": candidate_seed(path)})
    return out


def pick(run: RunFolder, name: str, number: Any, reporter: report.Reporter | None = None) -> None:
    """The library's pick (pipeline.do_pick: the seed into the row, the picture into dreams/), under
    the folder's lock; number is checked as the CLI's N is."""
    from .. import pipeline

    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 99:
        raise UserError("number must be a candidate's number, counted from 1 (1 to 99)")
    with _one_write():
        pipeline.do_pick(run, settings_for(run), name, number, reporter=reporter or report.Reporter())


def status(run: RunFolder) -> dict[str, Any]:
    from ..pipeline import status_data

    return status_data(run)
