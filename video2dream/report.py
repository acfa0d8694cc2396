"""Where progress and messages go: a Reporter. The library never prints; it tells the current
reporter (report.current()), which the caller chooses (report.using(reporter)):

- CliReporter (the default): the progress bars and the `video2dream: ...` lines on stderr, as the
  command line has always shown them;
- CollectingReporter: records every event as data (a test, a script, a page that shows progress).

Events: a stage started (its name, how many units, what one unit makes), a unit done, a unit failed
(the units a stage did not commit when it stopped, with the error), a stage finished, a message, a
stage command's wall time (timing: its whole call, model loading included) and `run`'s table of them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StageTime:
    """One stage command's wall time (time.monotonic around its whole call: checks, model loading,
    the units and freeing the models) and what it made."""
    stage: str  # "extract", "interrogate", "generate", "morph", "assemble", ...
    seconds: float
    made: int  # units made now (0: all up to date)
    unit: str  # what one unit is: "frame", "caption", "dream", "in-between", "video"
    rated: bool = True  # False: no units-per-second (assemble: one video, its encode time alone)

    @property
    def rate(self) -> float | None:
        """Units made per second; None when nothing was made (or the stage has no rate)."""
        if not self.rated or not self.made or self.seconds <= 0:
            return None
        return self.made / self.seconds

    def words(self) -> str:
        """'2 min 31 s, 0.08 dream/s' (the rate left out when there is none)."""
        rate = self.rate
        return duration_words(self.seconds) + (f", {rate_words(rate)} {self.unit}/s" if rate is not None else "")

    def made_words(self) -> str:
        return f"{self.made} {self.unit}(s)"


def duration_words(seconds: float) -> str:
    """'0.42 s', '4.2 s', '31 s', '2 min 31 s', '1 h 05 min'."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def rate_words(rate: float) -> str:
    """Two significant digits or so: '12', '6.7', '0.08', '0.0031'."""
    if rate >= 10:
        return f"{rate:.0f}"
    if rate >= 1:
        return f"{rate:.1f}"
    if rate >= 0.01:
        return f"{rate:.2f}"
    return f"{rate:.2g}"


def table_heading(total: float) -> str:
    return f"run: done in {duration_words(total)}; each stage's time (model loading included):"


def table_lines(rows: list[StageTime], total: float) -> list[str]:
    """`run`'s closing table: a heading, then each stage (what it made, its time, its rate), then the
    whole command's time (more than the rows' sum: the checks between stages count too)."""
    cells = [("stage", "made", "time", "rate")]
    cells += [(t.stage, t.made_words(), duration_words(t.seconds),
               f"{rate_words(t.rate)} {t.unit}/s" if t.rate is not None else "") for t in rows]
    cells.append(("total", "", duration_words(total), ""))
    w = [max(len(row[k]) for row in cells) for k in range(4)]
    return [f"{s:<{w[0]}}  {m:<{w[1]}}  {t:>{w[2]}}  {r}".rstrip() for s, m, t, r in cells]


class Reporter:
    """The events a command reports; each method does nothing here (override what you show)."""

    def say(self, message: str) -> None:
        """One line of news for the user."""

    def stage(self, stage: str, total: int, unit: str) -> None:
        """A stage starts total units (unit: what one makes, 'dream', 'frame')."""

    def unit_done(self, stage: str, name: str) -> None:
        """One unit's result is committed (written into the run folder)."""

    def unit_failed(self, stage: str, name: str, error: str) -> None:
        """A unit the stage did not commit when it stopped on error."""

    def finished(self, stage: str, done: int) -> None:
        """The stage ended (done: units committed), on success or failure."""

    def timing(self, time: StageTime) -> None:
        """A stage command ended well: its wall time, model loading included (its summary line,
        said next, carries the same in words)."""

    def times(self, rows: list[StageTime], total: float) -> None:
        """`run` ended well: each stage's time, and the whole command's (seconds)."""
        for line in [table_heading(total)] + table_lines(rows, total):
            self.say(line)


class CliReporter(Reporter):
    """The terminal's: a tqdm bar per stage (on a terminal only) and lines on stderr."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}

    def say(self, message: str) -> None:
        from .progress import print_line

        print_line(message)

    def stage(self, stage: str, total: int, unit: str) -> None:
        from .progress import progress_bar

        self._close(stage)
        self._bars[stage] = progress_bar(total=total, desc=stage, unit=unit)

    def unit_done(self, stage: str, name: str) -> None:
        bar = self._bars.get(stage)
        if bar is not None:
            bar.update(1)

    def finished(self, stage: str, done: int) -> None:
        self._close(stage)

    def times(self, rows: list[StageTime], total: float) -> None:
        """The table under one `video2dream: run: ...` line, on stderr (stdout stays clean)."""
        self.say(table_heading(total))
        for line in table_lines(rows, total):
            print(f"  {line}", file=sys.stderr, flush=True)

    def _close(self, stage: str) -> None:
        bar = self._bars.pop(stage, None)
        if bar is not None:
            bar.close()


@dataclass
class Event:
    kind: str  # "say", "stage", "unit_done", "unit_failed", "finished", "timing", "times"
    stage: str = ""
    name: str = ""  # the unit's (unit_done, unit_failed)
    total: int = 0  # stage: units to run; finished, timing: units committed, made; times: rows
    text: str = ""  # say: the message; unit_failed: the error; stage, timing: what one unit makes;
    # times: the table as the CLI prints it
    seconds: float | None = None  # timing: the stage's wall time; times: the whole command's
    rows: list[StageTime] = field(default_factory=list)  # timing: the one; times: each stage's


@dataclass
class CollectingReporter(Reporter):
    """Keeps every event, in order, as data."""
    events: list[Event] = field(default_factory=list)

    def say(self, message: str) -> None:
        self.events.append(Event("say", text=message))

    def stage(self, stage: str, total: int, unit: str) -> None:
        self.events.append(Event("stage", stage, total=total, text=unit))

    def unit_done(self, stage: str, name: str) -> None:
        self.events.append(Event("unit_done", stage, name))

    def unit_failed(self, stage: str, name: str, error: str) -> None:
        self.events.append(Event("unit_failed", stage, name, text=error))

    def finished(self, stage: str, done: int) -> None:
        self.events.append(Event("finished", stage, total=done))

    def timing(self, time: StageTime) -> None:
        self.events.append(Event("timing", time.stage, total=time.made, text=time.unit, seconds=time.seconds,
                                 rows=[time]))

    def times(self, rows: list[StageTime], total: float) -> None:
        self.events.append(Event("times", "run", total=len(rows), text="\n".join(table_lines(rows, total)),
                                 seconds=total, rows=list(rows)))

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    @property
    def messages(self) -> list[str]:
        return [e.text for e in self.of("say")]


# One per process, not a context variable: a backend's worker threads (Replicate's) report too.
_current: Reporter = CliReporter()


def current() -> Reporter:
    """The reporter of the command running now (the CLI's unless a caller chose one)."""
    return _current


@contextlib.contextmanager
def using(reporter: Reporter | None) -> Iterator[Reporter]:
    """Report to reporter inside the block (None: keep the current one)."""
    if reporter is None:
        yield current()
        return
    global _current
    before, _current = _current, reporter
    try:
        yield reporter
    finally:
        _current = before


@contextlib.contextmanager
def counted(stage: str, total: int, unit: str) -> Iterator[Any]:
    """A stage whose progress is a running count (ffmpeg's frames encoded so far), to the current
    reporter: reached(n) reports each unit up to n as done (named by its number)."""
    reporter = current()
    reporter.stage(stage, total, unit)
    made = 0

    def reached(n: int) -> None:
        nonlocal made
        while made < min(n, total):
            made += 1
            reporter.unit_done(stage, str(made))

    try:
        yield reached
    finally:
        reporter.finished(stage, made)
