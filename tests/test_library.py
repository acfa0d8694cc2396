"""The library as a script or a page drives it: each call takes the run folder's lock itself, reports
to a reporter object, and edit_row edits one row as a person editing prompts.csv would; the painter
takes injected components."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import cli, copy_run, make_clip, snapshot

from video2dream import pipeline
from video2dream.errors import UserError
from video2dream.report import CollectingReporter
from video2dream.runfolder import RunFolder
from video2dream.settings import replace_section, resolve
from video2dream.stages import interrogate

pytestmark = pytest.mark.slow  # tiny models



def tiny(run: RunFolder):
    """The folder's settings (tiny), painting 64x64."""
    return replace_section(resolve(run.saved_settings()), "generate", width=64, height=64)


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> Path:
    """Two frames, captioned (BLIP alone) on the tiny models."""
    d = tmp_path_factory.mktemp("library")
    clip = make_clip(d / "clip.mp4", "testsrc2=size=64x64:rate=10:duration=2", args=("-pix_fmt", "yuv420p"))
    run = d / "run"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    assert cli("interrogate", run, "--mode", "caption") == 0
    return run


def copy(src: Path, tmp_path: Path) -> RunFolder:
    return copy_run(src, tmp_path / "run")


def test_edit_row_is_a_hand_edit(captioned: Path, tmp_path: Path) -> None:
    run = copy(captioned, tmp_path)
    settings = tiny(run)
    before = run.prompts_csv.read_bytes()
    assert pipeline.edit_row(run, "000001.png", prompt="a lighthouse at dusk") is True
    assert pipeline.edit_row(run, "000001.png", prompt="a lighthouse at dusk") is False  # the same words
    rows = interrogate.read_prompts(run).set_index("filename")
    assert rows.loc["000001.png", "prompt"] == "a lighthouse at dusk"
    assert run.prompts_csv.read_bytes().split(b"\n")[2:] == before.split(b"\n")[2:]  # the other row as it was
    status = interrogate.status_data(run, settings)
    assert status["edited"] == ["000001.png"]
    pipeline.do_interrogate(run, settings)  # a later interrogate keeps it
    assert interrogate.read_prompts(run).set_index("filename").loc["000001.png", "prompt"] == "a lighthouse at dusk"
    with pytest.raises(UserError, match="no row for 000009.png"):
        pipeline.edit_row(run, "000009.png", prompt="x")


def test_a_library_call_takes_the_lock_and_reports_events(captioned: Path, tmp_path: Path) -> None:
    run = copy(captioned, tmp_path)
    settings = tiny(run)
    with run.lock():  # another holder (here: this test)
        untouched = snapshot(run.root)
        with pytest.raises(UserError, match="lock|another"):
            pipeline.do_generate(run, settings)
        with pytest.raises(UserError, match="lock|another"):
            pipeline.edit_row(run, "000001.png", prompt="x")
        assert snapshot(run.root) == untouched
    events = CollectingReporter()
    pipeline.do_generate(run, settings, reporter=events)
    kinds = [e.kind for e in events.events if e.kind != "say"]
    assert kinds == ["stage", "unit_done", "unit_done", "finished", "timing"]  # timing: the whole call's
    assert events.of("timing")[0].stage == "generate" and events.of("timing")[0].total == 2
    assert events.of("stage")[0].stage == "generate" and events.of("stage")[0].total == 2
    assert sorted(e.name for e in events.of("unit_done")) == ["000001.png", "000002.png"]
    assert events.of("finished")[0].total == 2
    assert any(m.startswith("generate: 2 dream(s) painted") for m in events.messages)


def test_a_failed_unit_is_reported(captioned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from video2dream.stages import generate

    run = copy(captioned, tmp_path)
    settings = tiny(run)

    def full_disk(run: RunFolder, unit, painted) -> str:
        raise UserError("the disk is full")

    monkeypatch.setattr(generate, "STAGE", dataclasses.replace(generate.STAGE, commit=full_disk))
    events = CollectingReporter()
    with pytest.raises(UserError, match="disk is full"):
        pipeline.do_generate(run, settings, reporter=events)
    assert sorted(e.name for e in events.of("unit_failed")) == ["000001.png", "000002.png"]
    assert events.of("finished")[0].total == 0


def test_the_painter_takes_injected_components(one_torch_thread) -> None:
    import numpy as np
    from diffusers import StableDiffusionXLPipeline

    from video2dream.models import hub
    from video2dream.models.painter import Painter

    parts = StableDiffusionXLPipeline.from_pretrained(hub.resolve("tiny:sdxl")).components
    injected = Painter("dummy", "cpu", components=parts)
    loaded = Painter("tiny:sdxl", "cpu")
    a, b = (np.asarray(p.paint(["a red boat"], [""], [3], 64, 64, 2, 5.0)[0]) for p in (injected, loaded))
    assert injected.model_name == "dummy"
    assert (a == b).all()
