"""Everything the review page asks of the library, in one module: progress capture, the lock, the
row edit and the jobs. Written against today's library (tqdm bars, `say` lines, RunFolder.lock);
when the engine's reporter, self-locking calls and edit_row land, only this module changes.

Jobs are the CLI's own calls (video2dream.pipeline.do_*); a repaint or re-caption of chosen rows
runs the same stage functions on fewer units. Cancel is Ctrl-C at a unit's end: the job stops at
the progress update that follows a finished (and written) unit, so nothing made is lost.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import Interrupted, SettingError, UserError
from ..runfolder import RunFolder
from ..settings import Settings, resolve

JOBS = ("repaint", "recaption", "inbetweens", "assemble")


class RowChanged(UserError):
    """The row was changed (by another tab, an editor or a command) since the page read it."""


class Canceled(Interrupted):
    """The page's cancel: raised at the first progress update after the unit in flight is written."""


# -- progress capture ------------------------------------------------------------------------------


@dataclass
class Sink:
    """Where one job's bars and lines go (the page's SSE stream reads `events`)."""
    emit: Callable[[dict[str, Any]], None]
    cancel: threading.Event = field(default_factory=threading.Event)


_local = threading.local()


class _Bar:
    """A tqdm stand-in for a job's thread: each update is an event; a cancel stops it here."""

    def __init__(self, sink: Sink, total: int | None = None, desc: str = "", unit: str = "it", **_: Any) -> None:
        self.sink, self.total, self.desc, self.unit, self.n = sink, total or 0, desc, unit, 0
        sink.emit({"type": "progress", "desc": desc, "n": 0, "total": self.total, "unit": unit})

    def update(self, n: int = 1) -> None:
        self.n += n
        self.sink.emit({"type": "progress", "desc": self.desc, "n": self.n, "total": self.total, "unit": self.unit})
        if self.sink.cancel.is_set():
            raise Canceled("canceled from the review page")

    def close(self) -> None:
        pass

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_installed = False


def _install() -> None:
    """Route progress_bar and say of every video2dream module through the job's sink (when the
    calling thread has one; the CLI's behaviour otherwise)."""
    global _installed
    if _installed:
        return
    import importlib

    from .. import progress

    for name in ("pipeline", "stages.extract", "stages.interrogate", "stages.generate", "stages.morph",
                 "stages.assemble", "telephone.chain"):
        importlib.import_module(f"video2dream.{name}")
    original_bar, original_say = progress.progress_bar, progress.say

    def bar(**kwargs: Any) -> Any:
        sink = getattr(_local, "sink", None)
        return _Bar(sink, **kwargs) if sink else original_bar(**kwargs)

    def say(message: str) -> None:
        sink = getattr(_local, "sink", None)
        if sink:
            sink.emit({"type": "line", "text": message})
        else:
            original_say(message)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("video2dream."):
            if getattr(module, "progress_bar", None) is original_bar:
                module.progress_bar = bar
            if getattr(module, "say", None) is original_say:
                module.say = say
    _installed = True


@contextlib.contextmanager
def reporting(sink: Sink) -> Iterator[None]:
    _install()
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = None


# -- the lock --------------------------------------------------------------------------------------


def lock_holder(run: RunFolder) -> dict[str, Any] | None:
    """Who holds the folder now (a CLI command, or this server's own job); None when free."""
    return run.lock_holder()


@contextlib.contextmanager
def locked(run: RunFolder) -> Iterator[None]:
    """The CLI's lock; a clear one-line UserError when another command holds it."""
    with run.lock():
        yield


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
    """prompts.csv's rows by filename, read as the stages read it (strict names, formula escapes)."""
    from ..stages.interrogate import FIX
    from ..tables import read_csv

    df = read_csv(run.prompts_csv, ["filename", "prompt"], FIX)
    return {r["filename"]: r for r in df.to_dict("records")}


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
    """A hand edit of prompts.csv's row for filename, under the lock: the same file an editor would
    leave (only those cells change), so `interrogate` keeps it and `status` shows it edited. version:
    the row's version as the caller read it; a different one now raises RowChanged. The new version."""
    from ..stages.interrogate import FIX
    from ..tables import read_csv, write_csv

    if prompt is not None:
        prompt = check_text("the prompt", prompt, required=True)
    if negative_prompt is not None:
        negative_prompt = check_text("the negative prompt", negative_prompt, required=False)
    with locked(run):
        df = read_csv(run.prompts_csv, ["filename", "prompt"], FIX)
        hits = df.index[df["filename"] == filename]
        if not len(hits):
            raise UserError(f"{run.prompts_csv.name} has no row for {filename}; run `video2dream interrogate` first")
        i = hits[0]
        if version is not None and row_version(df.loc[i].to_dict()) != version:
            raise RowChanged(f"the row of {filename} was changed since this page read it (another tab, an editor "
                             "or a command); reload it, then make your edit again")
        if negative_prompt is not None and "negative_prompt" not in df.columns:
            df["negative_prompt"] = ""
        if prompt is not None:
            df.loc[i, "prompt"] = prompt
        if negative_prompt is not None:
            df.loc[i, "negative_prompt"] = negative_prompt
        write_csv(run.prompts_csv, df)
        return row_version(df.loc[i].to_dict())


# -- the jobs --------------------------------------------------------------------------------------


def edited_rows(run: RunFolder, names: list[str]) -> list[str]:
    """Which of names are hand-edited rows (a re-caption would replace them)."""
    from ..stages.interrogate import is_edited, read_prompts

    rows = {r["filename"]: r for r in read_prompts(run).to_dict("records")} if run.prompts_csv.is_file() else {}
    return [n for n in names if n in rows and is_edited(rows[n])]


def run_job(kind: str, run: RunFolder, settings: Settings, names: list[str] | None, sink: Sink) -> None:
    """One job under the folder's lock, its progress into sink. names: the rows of a repaint or
    re-caption (None: every stale one, as the CLI command does)."""
    from .. import pipeline

    if kind not in JOBS:
        raise UserError(f"unknown job {kind!r}; the page runs {', '.join(JOBS)}")
    with reporting(sink), locked(run):
        if kind == "repaint":
            pipeline.do_generate(run, settings) if names is None else _repaint(run, settings, names)
        elif kind == "recaption":
            pipeline.do_interrogate(run, settings) if names is None else _recaption(run, settings, names)
        elif kind == "inbetweens":
            pipeline.do_morph(run, settings)
        else:
            pipeline.do_assemble(run, settings)


def _repaint(run: RunFolder, settings: Settings, names: list[str]) -> None:
    """generate for these rows only: those whose dream is not current are painted."""
    from ..models.devices import free_memory
    from ..pipeline import _saver
    from ..progress import say
    from ..stages import generate as g

    jobs, size = g.plan(run, settings)
    todo = [u for u in g.to_units(run, settings, jobs, size, False) if u.name in set(names)]
    if not todo:
        say(f"generate: the dreams of {', '.join(names[:5])} are up to date")
        return
    backend = settings.backend
    runner = g.start_units(run, settings, todo, backend, None, _saver(run, settings), run.dreams_dir)
    painted = []
    with g.progress_bar(total=len(todo), desc="generate", unit="dream") as bar:
        for name in g.commit_behind(run, runner.execute(run.root, todo, settings), g.commit):
            painted.append(name)
            bar.update(1)
    free_memory()
    say(f"generate: {len(painted)} dream(s) painted ({', '.join(painted[:5])}) -> {run.dreams_dir}")


def _recaption(run: RunFolder, settings: Settings, names: list[str]) -> None:
    """interrogate for these rows only (hand edits among them replaced: the page asked first)."""
    from ..backends import backend_for
    from ..models.devices import free_memory
    from ..pipeline import _saver
    from ..progress import say
    from ..stages import interrogate as it

    todo, table = it.plan_units(run, settings, True, settings.backend)
    todo = [u for u in todo if u.name in set(names)]
    runner = backend_for(settings.backend, None)
    runner.before(run.root, todo, settings)
    runner.load("caption", settings)
    _saver(run, settings)()
    with it.progress_bar(total=len(todo), desc=f"interrogate ({settings.interrogate.mode})", unit="frame") as bar:
        for done in runner.execute(run.root, todo, settings, wanted=table.wanted):
            it.commit(run, table, done)
            bar.update(len(done))
    free_memory()
    say(f"interrogate: {len(table.result.done)} row(s) written -> {run.prompts_csv}")


def status(run: RunFolder) -> dict[str, Any]:
    from ..pipeline import status_data

    return status_data(run)
