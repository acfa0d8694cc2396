"""The backend interface: where units run. A backend loads (or reaches) the models, runs units in
batches and yields their results as each batch finishes; it never writes into the run folder (the
stage's commit does, in the process that holds the run folder's lock).

A new backend is one module in this package: a Backend subclass with @register("NAME"); it is found
by name (backends.get("NAME")), its module imported on first use.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..units import Unit

if TYPE_CHECKING:
    from PIL import Image

    from ..models.cache import ModelCache
    from ..settings import Settings


class Painted(NamedTuple):
    """A paint unit's result: the picture, and the names its A1111 text gives (only the model knows them)."""
    image: Image.Image
    sampler: str
    model: str


class Caption(NamedTuple):
    """A caption unit's result: the caption, and the prompt and negative prompt made from it
    (in caption mode: the caption itself and "")."""
    caption: str
    prompt: str
    negative_prompt: str


Done = tuple[Unit, Any]  # a unit and its result (Painted or Caption)


class Backend(ABC):
    """Runs units. models: a cache to take models from (and leave them in), for backends in this process.

    What it can do, declared (the engine reads it before anything runs or is paid):
      runs_here  its models run on this machine or a cluster of it: --device and --dtype apply
                 (checked here); False: a remote service's models;
      unit_kinds the unit kinds it runs;
      honours(kind, settings)  which of the kind's optional settings (units.KINDS[kind].optional:
                 the refiner, a ControlNet, ...) it applies; one that is on and not honoured is refused.
    """

    name = ""
    runs_here = True
    unit_kinds: frozenset[str] = frozenset(("caption", "paint", "morph"))
    drop_hints: dict[str, str] = {}  # setting path -> what to do instead, for a setting it does not honour

    @classmethod
    def honours(cls, kind: str, settings: Settings) -> frozenset[str]:
        """The optional settings (paths) of units of this kind that this backend applies: all of them."""
        from ..units import KINDS

        return frozenset(KINDS[kind].optional)

    @classmethod
    def check_settings(cls, kind: str, settings: Settings) -> None:
        """Refuse a kind this backend does not run, or an optional setting that is on and that it
        would drop (one line naming the setting and the backend)."""
        from ..errors import SettingError
        from ..units import KINDS

        if kind not in cls.unit_kinds:
            raise SettingError("backend", f"'{cls.name}' does not make {KINDS[kind].makes}", "use {backend} local")
        honoured = cls.honours(kind, settings)
        for path, on in KINDS[kind].optional.items():
            if on(settings) and path not in honoured:
                hint = cls.drop_hints.get(path, f"leave out {{{path}}} (none)")
                raise SettingError(path, f"is not applied by {{backend}} {cls.name}: the pictures would be made "
                                   "without it", f"{hint}, or use {{backend}} local",
                                   also=("backend", *re.findall(r"\{([\w.]+)\}", hint)))

    def __init__(self, models: ModelCache | None = None) -> None:
        self.models = models

    @abstractmethod
    def load(self, kind: str, settings: Settings) -> None:
        """Make ready what units of this kind need (load the models, reach the service). The stage
        calls it before it writes anything: a failure here leaves the run folder as it was."""

    @classmethod
    def key_part(cls, kind: str, settings: Settings) -> dict[str, Any]:
        """What this backend adds to the key of each unit of this kind it makes: empty for a backend
        whose results are the local ones (this process, a cluster of the same models); a remote
        service's results are not, so it names itself and the model version (local and remote
        results never pass for each other, and switching backends makes the work again)."""
        return {}

    def before(self, root: Path, units: list[Unit], settings: Settings, later: int = 0,  # noqa: B027
               later_gaps: int = 0) -> None:
        """Called with the units about to run, before load and before anything is written. A backend
        that pays per unit says here what it will cost, and may refuse (a UserError). later: units a
        later stage of the same command may add (`run`: the dreams of the frames captioned now);
        later_gaps: gaps whose in-betweens it may add (`run --transition morph`)."""

    @classmethod  # noqa: B027 - most backends need nothing
    def check_ready(cls, settings: Settings) -> None:
        """What this backend needs on this machine before a command writes anything (a client, a
        token), checked without reaching anything: a UserError saying what to install or set."""

    def committed(self, units: list[Unit]) -> None:  # noqa: B027 - most backends need not know
        """Called by the stage once these units' results are on disk (renamed into place): a backend
        that pays per unit marks them done only now (a kill before it collects them again)."""

    def token_limits(self, units: list[Unit], settings: Settings) -> dict[str, tuple[str, str]]:
        """For paint units: unit name -> (what the text encoders read, what their limit cuts off),
        for the prompts that are cut. Empty when the backend cannot tell."""
        return {}

    @abstractmethod
    def execute(self, root: Path, units: list[Unit], settings: Settings,
                wanted: Callable[[Unit], bool] | None = None) -> Iterator[list[Done]]:
        """Run units (their inputs are relative to root); yield each finished batch's results, in
        order. settings name the models (and their device); the units carry everything else.
        wanted(unit) is asked before a batch is formed: a unit no longer wanted (a row edited by
        hand meanwhile) may be left out; a result yielded for it anyway is not committed."""


_REGISTRY: dict[str, type[Backend]] = {}


def register(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def add(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def get(name: str, models: ModelCache | None = None) -> Backend:
    """The backend called name: registered, or the module video2dream.backends.<name> that registers it."""
    return backend_class(name)(models)


def backend_class(name: str) -> type[Backend]:
    import importlib

    from ..errors import SettingError

    if name not in _REGISTRY and name.isidentifier():
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{name}":
                raise
    if name not in _REGISTRY:
        raise SettingError("backend", f"unknown {{backend}} '{name}'; known: {', '.join(sorted(_REGISTRY)) or 'local'}")
    return _REGISTRY[name]


def backend_for(backend: str | Backend, models: ModelCache | None = None) -> Backend:
    return backend if isinstance(backend, Backend) else get(backend, models)


def key_part(backend: str | Backend, kind: str, settings: Settings) -> dict[str, Any]:
    """The backend's part of a unit's key (Backend.key_part), found by name without making one."""
    if isinstance(backend, Backend):
        return backend.key_part(kind, settings)
    return backend_class(backend).key_part(kind, settings)
