"""Units, backends and commit: a model stage is plan (no model), execute (a backend), commit (the writer)."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import cli, copy_run, make_clip, snapshot
from PIL import Image

from video2dream import backends
from video2dream.backends.local import LocalBackend
from video2dream.errors import UserError
from video2dream.runfolder import RunFolder
from video2dream.settings import replace_section, resolve
from video2dream.stages import generate, interrogate
from video2dream.units import Unit

ARGS = ("--preset", "tiny", "--seed", "7", "--negative-prompt", "blurry")


# -- units are plain data (fast) -------------------------------------------------------------------


def test_units_are_picklable_and_json_round_trip() -> None:
    units = [Unit("000001.png", "caption", ("frames/000001.png",),
                  {"mode": "fast", "min_length": 8, "max_length": 32, "num_beams": 1, "no_repeat_ngram_size": 3},
                  "k1"),
             Unit("step_004.png", "paint", ("step_003.png",),
                  {"prompt": "a cat", "negative_prompt": "", "seed": 5, "width": 64, "height": 64,
                   "strength": 0.5, "lora": None, "extra": {"Telephone step": 4}}, "k2")]
    for u in units:
        assert pickle.loads(pickle.dumps(u)) == u
        assert Unit.from_json(json.loads(json.dumps(u.to_json()))) == u


@pytest.mark.parametrize("name, kind, inputs, params", [
    ("../x.png", "paint", (), {}),  # not a frame's name: could write outside the folder
    ("000001.png", "morph", (), {}),  # no such kind (yet)
    ("000001.png", "paint", ("/etc/passwd",), {}),
    ("000001.png", "paint", ("frames/../../x.png",), {}),
    ("000001.png", "paint", (), {"image": object()}),  # not JSON: could not go to another machine
])
def test_a_unit_refuses_what_could_not_travel_or_would_escape(name, kind, inputs, params) -> None:
    with pytest.raises(ValueError):
        Unit(name, kind, inputs, params)


def test_an_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="unknown backend 'nosuch'; known: .*local"):
        backends.get("nosuch")
    assert isinstance(backends.get("local"), LocalBackend)


# -- on the tiny models ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> Path:
    """`run --preset tiny` of a 3 s clip (3 frames, batches of 2 and 1); tests copy it."""
    d = tmp_path_factory.mktemp("units")
    clip = make_clip(d / "clip.mp4", "testsrc2=size=160x120:rate=25:duration=3",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    run = d / "run"
    assert cli("run", clip, "-o", run, *ARGS, "--batch-size", "2", "--caption-batch-size", "2") == 0
    return run


def copy(base: Path, dest: Path) -> RunFolder:
    return copy_run(base, dest)


def dreams(run: RunFolder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.dreams_dir.glob("*.png"))}


@pytest.mark.slow
def test_plan_loads_no_model(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from video2dream.models.cache import ModelCache

    run = copy(base, tmp_path / "run")
    settings = resolve(run.saved_settings())
    (run.dreams_dir / "000002.png").unlink()
    df = interrogate.read_prompts(run)
    df.loc[0, "settings_key"] = "another"  # a stale row
    df.to_csv(run.prompts_csv, index=False)

    def refuse(*args, **kwargs):
        raise AssertionError("plan touched a model")

    monkeypatch.setattr(ModelCache, "__init__", refuse)
    monkeypatch.setattr(ModelCache, "_get", refuse)
    captions, _table = interrogate.plan_units(run, settings)
    paints, size = generate.plan_units(run, settings)
    assert [(u.name, u.kind, u.inputs) for u in captions] == [("000001.png", "caption", ("frames/000001.png",))]
    assert [(u.name, u.kind, u.inputs) for u in paints] == [("000002.png", "paint", ())]
    assert paints[0].params["seed"] == 7 + 2 and paints[0].params["negative_prompt"].endswith("blurry")
    assert (paints[0].params["width"], paints[0].params["height"]) == size
    assert len(generate.plan_units(run, settings, force=True)[0]) == 3


@backends.register("recording")
class RecordingBackend(LocalBackend):
    """A second backend, defined only here: the local one, noting every batch it is given."""

    batches: list[list[str]] = []  # paint and caption batches, by unit name
    kinds: list[str] = []  # each batch's kind

    def execute(self, root: Path, units: list[Unit], settings, wanted: Callable[[Unit], bool] | None = None
                ) -> Iterator[list]:
        for done in super().execute(root, units, settings, wanted):
            RecordingBackend.batches.append([u.name for u, _ in done])
            RecordingBackend.kinds.append(done[0][0].kind)
            yield done


@pytest.mark.slow
def test_another_backend_plugs_in_by_name_and_makes_the_same_dreams(base: Path, tmp_path: Path) -> None:
    run = copy(base, tmp_path / "run")
    settings = resolve(run.saved_settings())
    before = dreams(run), run.prompts_csv.read_bytes()
    RecordingBackend.batches.clear()
    RecordingBackend.kinds.clear()
    interrogate.interrogate(run, settings, force=True, backend="recording")
    r = generate.generate(run, settings, force=True, backend="recording")
    assert RecordingBackend.batches == [["000001.png", "000002.png"], ["000003.png"]] * 2
    assert r.painted == ["000001.png", "000002.png", "000003.png"]
    assert (dreams(run), run.prompts_csv.read_bytes()) == before


@pytest.mark.slow
def test_commit_is_the_only_writer(base: Path, tmp_path: Path) -> None:
    run = copy(base, tmp_path / "run")
    settings = resolve(run.saved_settings())
    shutil.rmtree(run.dreams_dir)
    units, _ = generate.plan_units(run, settings)
    local = backends.get("local")
    local.load("paint", settings)
    untouched = snapshot(run.root)
    results = [done for batch in local.execute(run.root, units, settings) for done in batch]
    assert snapshot(run.root) == untouched  # executing wrote nothing
    run.dreams_dir.mkdir()
    for unit, painted in reversed(results):  # commits in any order, by hand
        generate.commit(run, unit, painted)
    assert dreams(run) == dreams(RunFolder(base))

    captions, table = interrogate.plan_units(run, settings, force=True)
    local.load("caption", settings)
    untouched = snapshot(run.root)
    done = [d for batch in local.execute(run.root, captions, settings) for d in batch]
    assert snapshot(run.root) == untouched
    interrogate.commit(run, table, done)
    assert run.prompts_csv.read_bytes() == (base / "prompts.csv").read_bytes()


@pytest.mark.slow
def test_the_telephone_paints_its_steps_as_units_on_the_backend(base: Path, tmp_path: Path) -> None:
    """A chain's steps go through the same paint units, backend and A1111 writer as the dreams."""
    from video2dream.pngmeta import parse_parameters, read_parameters
    from video2dream.telephone import chain_settings, telephone

    image = base / "frames" / "000002.png"
    settings = chain_settings(replace_section(resolve(RunFolder(base).saved_settings()), "telephone", steps=2))
    settings = replace_section(settings, "generate", strength=0.6)
    local = RunFolder(tmp_path / "local")
    telephone(image, local, settings)
    RecordingBackend.batches.clear()
    RecordingBackend.kinds.clear()
    recorded = RunFolder(tmp_path / "recorded")
    telephone(image, recorded, settings, backend="recording")
    by_kind = {kind: [b for b, k in zip(RecordingBackend.batches, RecordingBackend.kinds, strict=True) if k == kind]
               for kind in ("paint", "caption")}
    assert by_kind["paint"] == [["step_001.png"], ["step_002.png"]]
    assert by_kind["caption"] == [["step_000.png"], ["step_001.png"], ["step_002.png"]]  # each step's own PNG
    steps = ["step_000.png", "step_001.png", "step_002.png"]
    assert [(local.root / n).read_bytes() for n in steps] == [(recorded.root / n).read_bytes() for n in steps]
    p = parse_parameters(read_parameters(local.root / "step_002.png"))
    assert (p["Seed"], p["Telephone step"], p["Denoising strength"]) == ("9", "2", "0.6")
    assert p["negative_prompt"] == "blurry"

    # killed between a step's two commits: painted, not captioned. The next command captions it
    # (a caption unit on its PNG) and paints nothing again; the files end as an unbroken chain's.
    from video2dream.pngmeta import read_png_text, save_png
    from video2dream.telephone.steps import CHUNK

    whole = {n: (recorded.root / n).read_bytes() for n in steps}
    last = recorded.root / "step_002.png"
    row = json.loads(read_png_text(last)[CHUNK])
    with Image.open(last) as im:
        save_png(im.convert("RGB"), last, read_parameters(last), {CHUNK: json.dumps({**row, "caption": None})})
    (recorded.root / "chain.csv").unlink()
    RecordingBackend.batches.clear()
    RecordingBackend.kinds.clear()
    telephone(image, recorded, settings, backend="recording")
    assert list(zip(RecordingBackend.kinds, RecordingBackend.batches, strict=True)) == [("caption", ["step_002.png"])]
    assert {n: (recorded.root / n).read_bytes() for n in steps} == whole


def test_a_sigterm_is_not_taken_for_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The SIGTERM handler raises Interrupted wherever the program is; code that treats any
    Exception as "cannot read it" (here: is a dream current?) must let it through, as it lets
    Ctrl-C through. (Seen: SIGTERM during the tokenizer gave "unexpected error: ValueError".)"""
    from video2dream import pngmeta
    from video2dream.cli import _on_sigterm
    from video2dream.errors import Interrupted

    def stopped(path):
        _on_sigterm(15, None)

    monkeypatch.setattr(pngmeta, "png_decodes", stopped)
    dream = tmp_path / "000001.png"
    dream.write_bytes(b"\x89PNG")  # a file: is_current reads it
    with pytest.raises(Interrupted):
        generate.is_current(dream, "key")
