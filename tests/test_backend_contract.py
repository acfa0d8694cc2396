"""One contract for every backend (like diffusers' pipeline tester mixin): the same tests run on
local, ray and the fake Replicate (tests/fake_replicate.py). Same units in, same results out; a
setting the backend would drop refused before anything runs or is paid; a command killed after its
first result resumes with the rest only; no temporary file left. Lean: tiny preset, 2 frames, 64x64."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, copy_run, make_clip, pixels, snapshot

from video2dream.backends.base import backend_class
from video2dream.errors import SettingError
from video2dream.runfolder import TMP_MARK, RunFolder
from video2dream.settings import Settings, replace_section, resolve
from video2dream.stages import generate, interrogate
from video2dream.stages.engine import Engine
from video2dream.units import KINDS

pytestmark = pytest.mark.slow  # tiny models, a Ray instance, a fake server
BACKENDS = ["local", "ray", "replicate"]
# A value that turns each optional paint setting on (what a backend may not honour).
ON = {"generate.refiner": "tiny:sdxl-refiner", "generate.controlnet": "canny",
      "generate.prompt_weighting": "a1111", "generate.lora": "style.safetensors",
      "generate.scheduler": "EulerDiscreteScheduler", "generate.vae": "madebyollin/sdxl-vae-fp16-fix",
      "generate.preview_vae": "madebyollin/taesdxl"}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> Path:
    d = tmp_path_factory.mktemp("contract")
    clip = make_clip(d / "clip.mp4", "testsrc2=size=64x64:rate=10:duration=2", args=("-pix_fmt", "yuv420p"))
    run = d / "extracted"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    return run


@pytest.fixture(scope="module")
def server():
    from fake_replicate import Server

    s = Server()
    yield s
    s.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = request.param
    if name == "replicate":
        from test_replicate_backend import point_client_at

        point_client_at(server, monkeypatch)
    if name == "ray":
        request.getfixturevalue("ray_instance")
    yield name


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """A local Ray instance for this module (2 CPUs, one torch thread per actor as in this process)."""
    import logging
    import os

    ray = pytest.importorskip("ray")
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    from video2dream.backends.ray import release_pools

    release_pools()
    ray.shutdown()
    if threads is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = threads


def tiny(run: RunFolder, backend: str) -> Settings:
    """The folder's settings (tiny): captions alone, 64x64 dreams in batches of one, on backend."""
    import dataclasses

    s = replace_section(resolve(run.saved_settings()), "interrogate", mode="caption")
    s = replace_section(s, "generate", width=64, height=64, batch_size=1)
    return dataclasses.replace(s, backend=backend)


def copy(src: Path, tmp_path: Path) -> RunFolder:
    return copy_run(src, tmp_path / "run")


def no_temporaries(run: RunFolder) -> None:
    assert not [p for p in run.root.rglob("*") if TMP_MARK in p.name]


def test_same_units_in_same_results_out(backend: str, extracted: Path, tmp_path: Path) -> None:
    run = copy(extracted, tmp_path)
    settings = tiny(run, backend)
    interrogate.interrogate(run, settings, backend=backend)
    made = generate.generate(run, settings, backend=backend)
    assert sorted(made.painted) == ["000001.png", "000002.png"]  # a remote backend: in any order
    # The same units again (force): the same pictures, and the same captions as prompts.csv's.
    units, _size = generate.plan_units(run, settings, force=True, backend=backend)
    again = Engine(run, settings, backend).results(units)
    assert sorted(u.name for u, _ in again) == sorted(made.painted)
    for unit, painted in again:
        assert type(painted).__name__ == KINDS["paint"].result
        assert (np.asarray(painted.image.convert("RGB")) == pixels(run.dreams_dir / unit.name)).all(), unit.name
    captions, _table = interrogate.plan_units(run, settings, force=True, backend=backend)
    rows = interrogate.read_prompts(run).set_index("filename")
    for unit, caption in Engine(run, settings, backend).results(captions):
        assert type(caption).__name__ == KINDS["caption"].result
        assert (caption.prompt, caption.negative_prompt) == (rows.loc[unit.name, "prompt"],
                                                            rows.loc[unit.name, "negative_prompt"])
    no_temporaries(run)


@pytest.mark.parametrize("path", sorted(KINDS["paint"].optional))
def test_a_setting_the_backend_would_drop_is_refused_before_anything_runs(
        backend: str, path: str, extracted: Path, tmp_path: Path, server) -> None:
    run = copy(extracted, tmp_path)
    settings = tiny(run, backend)
    interrogate.interrogate(run, settings, backend=backend)
    section, name = path.split(".")
    on = replace_section(settings, section, **{name: ON[path]})
    cls = backend_class(backend)
    if path in cls.honours("paint", on):
        cls.check_settings("paint", on)  # honoured: the engine lets it through
        return
    untouched = snapshot(run.root)
    created = dict(server.fake.created)
    with pytest.raises(SettingError) as refused:
        generate.generate(run, on, backend=backend)
    assert refused.value.path == path and backend in str(refused.value)
    assert snapshot(run.root) == untouched and dict(server.fake.created) == created  # nothing run, nothing paid


def test_killed_after_the_first_result_resumes_with_the_rest(backend: str, extracted: Path, tmp_path: Path) -> None:
    run = copy(extracted, tmp_path)
    settings = tiny(run, backend)
    interrogate.interrogate(run, settings, backend=backend)
    cls = backend_class(backend)

    class Killed(cls):  # type: ignore[misc, valid-type]
        def execute(self, root, units, settings, wanted=None):
            for batch in super().execute(root, units, settings, wanted):
                yield batch
                raise KeyboardInterrupt  # Ctrl-C once the first batch is made

    with pytest.raises(KeyboardInterrupt):
        generate.generate(run, settings, backend=Killed())
    first = {p.name: p.stat().st_mtime_ns for p in run.dreams_dir.glob("*.png")}
    assert len(first) == 1  # committed, though the command was stopped
    left, _ = generate.plan_units(run, settings, backend=backend)
    assert [u.name for u in left] == [n for n in ("000001.png", "000002.png") if n not in first]
    made = generate.generate(run, settings, backend=backend)
    assert sorted(made.painted) == [u.name for u in left]
    assert {n: (run.dreams_dir / n).stat().st_mtime_ns for n in first} == first  # never painted again
    no_temporaries(run)


# -- what Replicate's SDXL takes, and what it is refused ------------------------------------------


def test_replicate_sends_the_refiner_as_its_sdxl_takes_it(extracted: Path, tmp_path: Path, server,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from test_replicate_backend import point_client_at

    fake = point_client_at(server, monkeypatch)
    run = copy(extracted, tmp_path)
    settings = replace_section(tiny(run, "replicate"), "generate", refiner="stabilityai/refiner", refiner_switch=0.7)
    interrogate.interrogate(run, settings, backend="replicate")
    generate.generate(run, settings, backend="replicate")
    paints = [p.input for p in fake.predictions.values() if p.kind == "paint"]
    assert len(paints) == 2
    assert all(p["refine"] == "expert_ensemble_refiner" and p["high_noise_frac"] == 0.7 for p in paints)


@pytest.mark.parametrize("flag", [("--controlnet", "canny"), ("--scheduler", "Euler a"),
                                  ("--vae", "madebyollin/sdxl-vae-fp16-fix"), ("--preview-vae", "madebyollin/taesdxl")])
def test_replicate_refuses_what_it_would_drop_in_one_line_before_paying(
        flag: tuple[str, str], extracted: Path, tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch,
        capsys) -> None:
    from conftest import one_line_error
    from test_replicate_backend import point_client_at

    fake = point_client_at(server, monkeypatch)
    run = copy(extracted, tmp_path)
    untouched = snapshot(run.root)
    code = cli("run", extracted.parent / "clip.mp4", "-o", run.root, "--backend", "replicate", *flag)
    one_line_error(code, capsys.readouterr().err, flag[0], "replicate")
    assert not fake.predictions and snapshot(run.root) == untouched  # not even the captions were paid


def test_ray_keeps_its_pool_for_a_chain(extracted: Path, tmp_path: Path, ray_instance) -> None:
    """A telephone chain's steps are one unit per call on one engine: the same actor runs them all
    (its models loaded once), until the command ends."""
    from video2dream import pipeline, report

    run = copy(extracted, tmp_path)
    settings = tiny(run, "ray")
    interrogate.interrogate(run, settings)
    events = report.CollectingReporter()
    engine = Engine(run, settings, "ray")
    with report.using(events):
        for name in ("000001.png", "000002.png"):  # one unit per call, as a chain's steps
            units, _ = generate.plan_units(run, settings, force=True, backend="ray")
            engine.results([u for u in units if u.name == name])
    ran = [m.split(" ran ")[0] for m in events.messages if " ran " in m]
    assert len(ran) == 2 and len(set(ran)) == 1, events.messages
    assert list(engine.backend.pools)  # kept between the calls
    pipeline._end_of_command()  # what the outermost library call does when it ends
    assert engine.backend.pools == {}
