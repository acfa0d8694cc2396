"""The engine: the one driver of every model stage (interrogate, generate, morph, the telephone's
caption and paint steps, and the next one).

A model stage is a small declaration, a Stage: its unit kind, its output folder, how it commits one
result (or one batch), and what its bar says. The stage's module plans its units (plan_units: reads
the run folder, loads no model) and hands the ones to make to Engine.run, which

  1. checks the backend can honour the settings (capabilities; a setting it would drop is refused),
  2. asks the backend what it will cost (before; it may refuse), loads the models (load),
  3. saves the settings (on_ready) and makes the output folder ready (temporaries of a killed run gone),
  4. executes the units on the backend and commits each result as it comes: on a writer thread
     behind the model (commit_behind) or, for a table, batch by batch in order (commit_batch),
  5. reports each unit to the current reporter (video2dream.report), and on an interrupt or an
     error still commits what was made before it stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runfolder import RunFolder
from ..units import Unit

if TYPE_CHECKING:
    from ..backends import Backend, Done
    from ..models.cache import ModelCache
    from ..settings import Settings

KEY_CHUNK = "video2dream"  # the PNG text chunk that carries a picture's key


@dataclass(frozen=True)
class Stage:
    """A model stage, declared."""
    name: str  # what its bar and its events say ("generate", "interrogate (best)")
    kind: str  # the kind of its units (units.KINDS)
    unit: str  # what one unit makes, for the bar ("dream", "frame", "in-between")
    out_dir: Callable[[RunFolder], Path] | None = None  # made ready before the first commit
    # one result -> the name written, on the writer thread while the backend runs the next batch
    commit: Callable[[RunFolder, Unit, Any], str] | None = None
    # or one batch -> the names written, in order, in this thread (a table such as prompts.csv)
    commit_batch: Callable[[RunFolder, list[Done]], list[str]] | None = None


class Engine:
    """Runs a stage's units on a backend for one run folder and commits them."""

    def __init__(self, run: RunFolder, settings: Settings, backend: str | Backend = "local",
                 models: ModelCache | None = None) -> None:
        self.run, self.settings = run, settings
        self._backend, self._models = backend, models
        self.runner: Backend | None = backend if not isinstance(backend, str) else None

    @property
    def backend(self) -> Backend:
        """The backend, made on first use (a name is looked up then)."""
        if self.runner is None:
            from ..backends import backend_for

            self.runner = backend_for(self._backend, self._models)
        return self.runner

    @property
    def backend_class(self) -> type[Backend]:
        """Its class, for its capabilities, without making one (a name is looked up)."""
        from ..backends.base import backend_class

        return type(self._backend) if not isinstance(self._backend, str) else backend_class(self._backend)

    def check_here(self) -> None:
        """A backend whose models run on this machine (or a cluster of it): --device and --dtype
        must work, even with nothing to do (never save a --device that cannot work)."""
        if self.backend_class.runs_here:
            from ..models.devices import check_device

            check_device(self.settings.device, self.settings.dtype)

    def check(self, kind: str) -> None:
        """Refuse, before anything runs or is paid, a setting the backend would drop."""
        self.backend_class.check_settings(kind, self.settings)

    def start(self, stage: Stage, todo: list[Unit], on_ready: Callable[[], None] | None = None,
              started: Callable[[Backend], None] | None = None) -> Backend:
        """Before anything is written: the backend says what it will cost (or refuses) and loads what
        the units need; then the settings are saved (on_ready), the stage's folder made ready, and
        started(runner) called (a stage's own preparation: a note about cut prompts, orphans saved)."""
        self.check(stage.kind)
        runner = self.backend
        runner.before(self.run.root, todo, self.settings)
        runner.load(todo[0].kind if todo else stage.kind, self.settings)
        if on_ready:
            on_ready()
        if stage.out_dir is not None:
            self.run.remove_temporaries()
            stage.out_dir(self.run).mkdir(parents=True, exist_ok=True)
        if started:
            started(runner)
        return runner

    def run_units(self, stage: Stage, todo: list[Unit], on_ready: Callable[[], None] | None = None,
                  started: Callable[[Backend], None] | None = None,
                  wanted: Callable[[Unit], bool] | None = None) -> list[str]:
        """Make todo (start, then execute); the names committed. Nothing to do: on_ready alone."""
        if not todo:
            if on_ready:
                on_ready()
            return []
        self.start(stage, todo, on_ready, started)
        return self.execute(stage, todo, wanted)

    def execute(self, stage: Stage, todo: list[Unit], wanted: Callable[[Unit], bool] | None = None,
                bar: bool = True) -> list[str]:
        """Run todo on the (started) backend and commit each result; the names committed. bar: report
        the stage and its units (the telephone runs one unit at a time under its own bar)."""
        from .. import report

        reporter = report.current() if bar else report.Reporter()
        reporter.stage(stage.name, len(todo), stage.unit)
        done: list[str] = []
        try:
            batches = self.backend.execute(self.run.root, todo, self.settings, wanted=wanted)
            if stage.commit_batch is not None:
                for batch in batches:
                    names = stage.commit_batch(self.run, batch)  # a killed run keeps every finished batch
                    self.backend.committed([unit for unit, _ in batch])  # a paid prediction is used only now
                    for name in names:
                        done.append(name)
                        reporter.unit_done(stage.name, name)
            else:
                assert stage.commit is not None, f"stage {stage.name} declares no commit"
                for name in commit_behind(self.run, batches, stage.commit, self.backend.committed):
                    done.append(name)
                    reporter.unit_done(stage.name, name)
        except BaseException as e:
            made = set(done)
            error = str(e) or e.__class__.__name__
            for u in todo:
                if u.name not in made:
                    reporter.unit_failed(stage.name, u.name, error)
            raise
        finally:
            reporter.finished(stage.name, len(done))
        return done

    def results(self, units: list[Unit]) -> list[Done]:
        """The units' results, committed nowhere (what a caption makes of a step already written)."""
        return [d for batch in self.backend.execute(self.run.root, units, self.settings) for d in batch]


def check_backend(settings: Settings, kinds: tuple[str, ...]) -> None:
    """Before a command that runs several stages writes anything (`run`, `telephone`): the chosen
    backend can make every kind of unit it will need, with every setting that is on."""
    from ..backends.base import backend_class

    cls = backend_class(settings.backend)
    for kind in kinds:
        cls.check_settings(kind, settings)


def is_current(path: Path, key: str) -> bool:
    """Whether path is a whole, undamaged PNG carrying key. The key is near the start of the file, so
    a file cut short (a full disk) or damaged in the middle would still carry it: check every chunk,
    and that its image data inflates (valid checksums over bad data would drop out of the video)."""
    from ..pngmeta import png_decodes, read_png_text
    from ..runfolder import is_regular

    if not is_regular(path):  # a FIFO would block the read; a folder is no dream
        return False
    try:
        return png_decodes(path) and read_png_text(path).get(KEY_CHUNK) == key
    except Exception:  # missing or corrupt: paint it again
        return False


def commit_behind(run: RunFolder, batches: Iterator[list[Done]], commit: Callable[[RunFolder, Unit, Any], str],
                  committed: Callable[[list[Unit]], None] | None = None) -> Iterator[str]:
    """Commit each result on a writer thread while the backend runs the next batch (the GPU never
    waits for PNG encoding); the names committed, as they are. A failed write is raised here; on
    an interrupt, the results already made are still written. committed(units) is told on the
    writer thread once a unit's file is renamed into place (a paid prediction is used only then)."""
    def write(unit: Unit, result: Any) -> str:
        name = commit(run, unit, result)
        if committed is not None:
            committed([unit])
        return name

    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: list[Future] = []
        for batch in batches:
            pending += [writer.submit(write, unit, result) for unit, result in batch]
            while pending and pending[0].done():
                yield pending.pop(0).result()  # re-raises a failed write here
        for f in pending:
            yield f.result()

