"""Settings declare their role once (key, speed, per-unit, per-call) and every key is derived from
the declarations: a new setting lands in the right keys with no other edit, and the settings of
today give byte-identical keys to those before the declarations (existing run folders stay current)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from conftest import cli, make_clip

from video2dream.errors import UserError
from video2dream.pipeline import _saver
from video2dream.runfolder import RunFolder
from video2dream.settings import (
    KEY,
    PER_CALL,
    PER_UNIT,
    ROLES,
    SECTIONS,
    SPEED,
    AssembleSettings,
    GenerateSettings,
    InterrogateSettings,
    Settings,
    key_fields,
    replace_section,
    resolve,
    role_of,
    setting,
)
from video2dream.stages import generate as gen
from video2dream.stages.assemble import grid_plan
from video2dream.stages.assemble import plan as assemble_plan
from video2dream.stages.interrogate import row_keys
from video2dream.telephone import chain_key, chain_outputs_key, chain_settings
from video2dream.telephone.keys import check_same_chain

NAMES = ["000001.png", "000002.png"]
MTIME_NS = 1_700_000_000_000_000_000
SIZE = (128, 96)

# Computed with the code before the roles were declared (each stage's hand-written list), for the
# folder made below: these keys must never change, or every existing run folder would go stale.
PINNED_EXTRACT = "9628023d30205dd2"
PINNED = {
    "tiny": {
        "rows": {"000001.png": "6257cfb4821e3c8c", "000002.png": "5da59cd2af4348e8"},
        "dreams": {"000001.png": "4b64d5fe18272f57", "000002.png": "e8eb25224b642b5a"},
        "chain": "0bddc5b97e56a327",
        "chain_fast": "8459bd175b8f8235",
    },
    "tweaked": {
        "rows": {"000001.png": "63fec7ad32ec9e08", "000002.png": "1f0abae3b8d855ac"},
        "dreams": {"000001.png": "1a25263497e414ea", "000002.png": "259261fff63f67f5"},
        "chain": "b4535c9f49a21c06",
        "chain_fast": "fc2da8f00dbbf0a6",
    },
    "sized": {
        "rows": {"000001.png": "6257cfb4821e3c8c", "000002.png": "5da59cd2af4348e8"},
        "dreams": {"000001.png": "917ecfc17d0b5e9f", "000002.png": "518a964ae8fbc0ee"},
        "chain": "0bddc5b97e56a327",
        "chain_fast": "8459bd175b8f8235",
    },
}
PINNED_VIDEOS = {
    "tiny": {"dreams": "eb84e8a2f117794f", "frames": "1566fbd7d533e7b6", "grid": "361850738bcff8d2",
             "telephone_outputs": "56ce0a067b26ff61"},
    "tweaked": {"dreams": "a36d391fd9d24fdf", "frames": "de71fd7da643d116", "grid": "5b93c3df3f8405b8",
                "telephone_outputs": "302299297087f7f6"},
}


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFolder, str]:
    """`extract --preset tiny` of a 2 s lavfi clip (Y4M: the same bytes every time), then a fixed
    extract key (so the later keys do not hang on the clip's bytes), prompts, dreams, fixed mtimes.
    Returns the folder and the extract key extract wrote."""
    tmp = tmp_path_factory.mktemp("roles")
    clip = make_clip(tmp / "clip.y4m", "testsrc2=size=96x64:rate=5:duration=2", args=("-pix_fmt", "yuv420p"))
    assert cli("extract", clip, "-o", tmp / "run", "--preset", "tiny") == 0
    run = RunFolder(tmp / "run")
    record = run.read_record("extract")
    extracted = record["key"]
    run.write_record("extract", {**record, "key": "pinned-extract-key"})
    run.prompts_csv.write_text("filename,time,prompt,negative_prompt\n"
                               "000001.png,0.0,a red fox,blurry\n000002.png,1.0,a blue bird,\n", encoding="utf-8")
    shutil.copytree(run.frames_dir, run.dreams_dir)
    for p in [*run.frames_dir.glob("*.png"), *run.dreams_dir.glob("*.png")]:
        os.utime(p, ns=(MTIME_NS, MTIME_NS))
    return run, extracted


def variants(run: RunFolder) -> dict[str, Settings]:
    base = resolve(run.saved_settings())
    tweaked = replace_section(base, "generate", seed=7, seed_mode="fixed", negative_prompt="ugly", strength=0.5,
                              preview_vae="tiny:taesdxl", lora="x:0.5", compile=True, batch_size=2)
    return {"tiny": base,
            "tweaked": replace_section(tweaked, "interrogate", mode="best", batch_size=3, chunk_size=5),
            "sized": replace_section(base, "generate", width=128, height=64)}


def keys(run: RunFolder, s: Settings) -> dict:
    return {"rows": row_keys(run, s, NAMES), "dreams": {j.name: j.key for j in gen.plan(run, s)[0]},
            "chain": chain_key(chain_settings(s), "fp", SIZE)[0], "chain_fast": chain_key(s, "fp", SIZE)[0]}


def test_extract_key_is_todays(pinned: tuple[RunFolder, str]) -> None:
    assert pinned[1] == PINNED_EXTRACT


@pytest.mark.parametrize("variant", sorted(PINNED))
def test_keys_are_todays(pinned: tuple[RunFolder, str], variant: str) -> None:
    run, _ = pinned
    assert keys(run, variants(run)[variant]) == PINNED[variant]


def test_video_keys_are_todays(pinned: tuple[RunFolder, str]) -> None:
    run, _ = pinned
    base = resolve(run.saved_settings())
    tweaked = replace_section(base, "assemble", transition="crossfade", out_fps=24.0, crf=20, side_by_side=True)
    for name, s in {"tiny": base, "tweaked": tweaked}.items():
        got = {"dreams": assemble_plan(run, s).key,
               "frames": assemble_plan(run, replace_section(s, "assemble", source="frames")).key,
               "grid": grid_plan(run, s).key, "telephone_outputs": chain_outputs_key("k", 5, s, "in.png")}
        assert got == PINNED_VIDEOS[name], name


def test_every_setting_declares_one_role() -> None:
    s = Settings()
    top = [f for f in dataclasses.fields(s) if f.name not in SECTIONS]
    for f in top + [f for section in SECTIONS for f in dataclasses.fields(getattr(s, section))]:
        assert role_of(f) in ROLES


def test_a_setting_without_a_role_is_refused() -> None:
    Bare = dataclasses.make_dataclass("Bare", [("sharpness", float, dataclasses.field(default=1.0))],
                                      bases=(GenerateSettings,))
    with pytest.raises(TypeError, match="sharpness"):
        key_fields(Bare())
    with pytest.raises(ValueError, match="role"):
        setting(1, "sometimes")


def with_new_fields(base: type, **new: tuple[object, str, bool]) -> type:
    """base with new settings name=(default, role, new_if_unset): what a contributor would add."""
    return dataclasses.make_dataclass(
        f"New{base.__name__}",
        [(name, object, setting(default, role, new_if_unset=later)) for name, (default, role, later) in new.items()],
        bases=(base,))


def test_a_new_generate_setting_lands_in_the_keys_by_its_role(pinned: tuple[RunFolder, str]) -> None:
    run, _ = pinned
    base = resolve(run.saved_settings())
    New = with_new_fields(GenerateSettings, sharpness=(1.0, KEY, False), threads=(2, SPEED, False),
                          grain=(None, KEY, True), jitter=(0, PER_UNIT, False))

    def with_generate(**values: object) -> Settings:
        return dataclasses.replace(base, generate=New(**{**dataclasses.asdict(base.generate), **values}))

    new = keys(run, with_generate())
    assert new["rows"] == PINNED["tiny"]["rows"]  # interrogate's keys do not see generate's settings
    assert new["dreams"] != PINNED["tiny"]["dreams"] and new["chain"] != PINNED["tiny"]["chain"]
    assert keys(run, with_generate(threads=8)) == new  # speed only: in no key
    sharper = keys(run, with_generate(sharpness=2.0))
    assert all(sharper["dreams"][n] != new["dreams"][n] for n in NAMES)
    assert sharper["chain"] != new["chain"] and sharper["chain_fast"] != new["chain_fast"]
    assert keys(run, with_generate(jitter=3))["dreams"] == new["dreams"]  # per-unit: the stage's own business
    assert keys(run, with_generate(jitter=3))["chain"] != new["chain"]  # the chain is one unit: as it is
    assert keys(run, with_generate(grain="fine"))["dreams"] != new["dreams"]  # new-if-unset, once set


def test_a_setting_added_later_keeps_old_work_current_while_unset(pinned: tuple[RunFolder, str]) -> None:
    run, _ = pinned
    base = resolve(run.saved_settings())
    New = with_new_fields(GenerateSettings, grain=(None, KEY, True))
    s = dataclasses.replace(base, generate=New(**dataclasses.asdict(base.generate)))
    assert keys(run, s) == PINNED["tiny"]  # every dream and chain made before it stays current


def test_a_new_interrogate_setting_lands_in_row_and_chain_keys(pinned: tuple[RunFolder, str]) -> None:
    run, _ = pinned
    base = resolve(run.saved_settings())
    New = with_new_fields(InterrogateSettings, temperature=(1.0, KEY, False), workers=(1, SPEED, False))

    def with_interrogate(**values: object) -> Settings:
        return dataclasses.replace(base, interrogate=New(**{**dataclasses.asdict(base.interrogate), **values}))

    new = keys(run, with_interrogate())
    assert keys(run, with_interrogate(workers=4)) == new
    warmer = keys(run, with_interrogate(temperature=0.5))
    assert all(warmer["rows"][n] != new["rows"][n] for n in NAMES)
    assert warmer["chain"] != new["chain"] and warmer["dreams"] == new["dreams"]


def test_the_chain_says_what_changed_for_a_new_setting(tmp_path: Path) -> None:
    New = with_new_fields(GenerateSettings, sharpness=(1.0, KEY, False))
    before = dataclasses.replace(Settings(), generate=New())
    after = dataclasses.replace(Settings(), generate=New(sharpness=2.0))
    run = RunFolder(tmp_path / "chain")
    key, parts = chain_key(before, "fp", SIZE)
    run.write_record("telephone", {"key": key, "parts": parts})
    with pytest.raises(UserError, match=r"generate\.sharpness 1\.0 -> 2\.0"):
        check_same_chain(run, *chain_key(after, "fp", SIZE), force=False)


def test_status_follows_the_roles(pinned: tuple[RunFolder, str], tmp_path: Path) -> None:
    from PIL import Image

    from video2dream.pngmeta import save_png

    src, _ = pinned
    run = RunFolder(tmp_path / "run")
    shutil.copytree(src.root, run.root)
    base = resolve(run.saved_settings())
    for job in gen.plan(run, base)[0]:
        with Image.open(run.frames_dir / job.name) as im:
            save_png(im.convert("RGB"), run.dreams_dir / job.name, "x", {gen.KEY_CHUNK: job.key})
    assert gen.status(run, base).startswith("2/2 dreams current")
    assert gen.status(run, replace_section(base, "generate", batch_size=3, compile=True)).startswith("2/2")
    assert gen.status(run, replace_section(base, "generate", steps=5)).startswith("0/2 dreams current, 2 stale")


def test_per_call_settings_are_never_saved(tmp_path: Path) -> None:
    assert [f.name for f in dataclasses.fields(AssembleSettings) if role_of(f) == PER_CALL] == ["source", "output"]
    New = with_new_fields(AssembleSettings, title=("x", PER_CALL, False))
    s = dataclasses.replace(Settings(), assemble=New(source="frames", output="x.mp4", title="once"))
    run = RunFolder(tmp_path / "run")
    _saver(run, s)()
    saved = run.saved_settings()["assemble"]
    assert not {"source", "output", "title"} & set(saved) and saved["crf"] == 18
