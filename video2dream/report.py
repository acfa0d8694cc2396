"""Where progress and messages go: a Reporter. The library never prints; it tells the current
reporter (report.current()), which the caller chooses (report.using(reporter)):

- CliReporter (the default): the progress bars and the `video2dream: ...` lines on stderr, as the
  command line has always shown them;
- CollectingReporter: records every event as data (a test, a script, a page that shows progress).

Events: a stage started (its name, how many units, what one unit makes), a unit done, a unit failed
(the units a stage did not commit when it stopped, with the error), a stage finished, a message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


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

    def _close(self, stage: str) -> None:
        bar = self._bars.pop(stage, None)
        if bar is not None:
            bar.close()


@dataclass
class Event:
    kind: str  # "say", "stage", "unit_done", "unit_failed", "finished"
    stage: str = ""
    name: str = ""  # the unit's (unit_done, unit_failed)
    total: int = 0  # stage: units to run; finished: units committed
    text: str = ""  # say: the message; unit_failed: the error; stage: what one unit makes


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
