"""What a new model stage costs (an upscaler, sketched here, not in the product): one KindSpec with
its typed parameters, one method in the backend that runs it, one Stage with its commit. The engine
does the rest: capabilities, start, execute, commit behind, the reporter's events."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from PIL import Image

from video2dream import report
from video2dream.backends.base import Painted
from video2dream.backends.local import LocalBackend
from video2dream.errors import SettingError
from video2dream.pngmeta import save_png
from video2dream.runfolder import RunFolder
from video2dream.settings import resolve
from video2dream.stages.engine import KEY_CHUNK, Engine, Stage, is_current
from video2dream.tables import FRAME_NAME
from video2dream.units import KINDS, KindSpec, Unit


@dataclass(frozen=True)
class UpscaleParams:
    factor: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UpscaleParams:
        return cls(int(d["factor"]))


UPSCALE = KindSpec("upscale", UpscaleParams, "Painted", "larger pictures", ("factor",), lambda s: 2,
                   lambda n: bool(FRAME_NAME.fullmatch(n)), "is not a frame's")


class Upscaler(LocalBackend):
    unit_kinds = LocalBackend.unit_kinds | {"upscale"}

    def load(self, kind: str, settings) -> None:
        if kind != "upscale":  # the upscaler needs no model here
            super().load(kind, settings)

    def _upscale(self, root: Path, batch: list[Unit], settings) -> list[Painted]:
        out = []
        for u in batch:
            f = u.typed().factor
            with Image.open(root / u.inputs[0]) as im:
                out.append(Painted(im.convert("RGB").resize((im.width * f, im.height * f), Image.LANCZOS),
                                   "Lanczos", "PIL"))
        return out


def commit(run: RunFolder, unit: Unit, painted: Painted) -> str:
    save_png(painted.image, run.root / "upscaled" / unit.name, f"Upscale: {unit.params['factor']}x",
             {KEY_CHUNK: unit.key})
    return unit.name


STAGE = Stage("upscale", "upscale", "picture", out_dir=lambda run: run.root / "upscaled", commit=commit)


def test_a_new_stage_is_a_spec_a_backend_method_and_a_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "upscale", UPSCALE)
    run = RunFolder(tmp_path / "run")
    run.frames_dir.mkdir(parents=True)
    names = ["000001.png", "000002.png", "000003.png"]
    for k, n in enumerate(names):
        Image.new("RGB", (8, 6), (40 * k, 100, 200)).save(run.frames_dir / n)
    units = [Unit(n, "upscale", (f"frames/{n}",), UpscaleParams(2).to_dict(), f"key-{n}") for n in names]
    settings = resolve(preset="tiny")
    events = report.CollectingReporter()
    with report.using(events):
        done = Engine(run, settings, Upscaler()).run_units(STAGE, units)
    assert done == names
    for n in names:
        assert is_current(run.root / "upscaled" / n, f"key-{n}")
        with Image.open(run.root / "upscaled" / n) as im:
            assert im.size == (16, 12)
    assert [e.kind for e in events.events] == ["stage"] + ["unit_done"] * 3 + ["finished"]
    # A backend that does not declare the kind is refused before anything runs.
    with pytest.raises(SettingError, match="does not make larger pictures"):
        Engine(run, settings, LocalBackend()).run_units(STAGE, units)
