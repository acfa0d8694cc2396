"""What a newcomer meets first: a failed first command that leaves nothing to force past, the
telephone game refused on a run's folder, model paths checked before anything loads, and the first
use's slow builds said."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, make_clip, one_line_error, snapshot
from PIL import Image

TINY = ("--preset", "tiny", "--width", "64", "--height", "64")


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("first-use") / "photo.png"
    y, x = np.mgrid[0:48, 0:64]
    Image.fromarray(np.stack([x * 4, y * 5, (x + y) % 256], axis=-1).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("first-use-clip") / "clip.mp4", "testsrc2=size=64x48:rate=10:duration=1",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p"))


@pytest.fixture(scope="module")
def not_a_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that exists but holds no model: its load fails (as offline, or a bad name would)."""
    folder = tmp_path_factory.mktemp("not-a-model")
    (folder / "notes.txt").write_text("no weights here\n", encoding="utf-8")
    return folder


# -- 1. a failed first command leaves nothing a retry must force past --------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("flag", ["--caption-model", "--model"])
def test_failed_chain_leaves_nothing_to_force_past(flag: str, picture: Path, not_a_model: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chain"
    out.mkdir()
    (out / "mine.txt").write_text("the user's\n", encoding="utf-8")
    before = snapshot(out)
    one_line_error(cli("telephone", picture, "-o", out, "--steps", "1", *TINY, flag, not_a_model),
                   capsys.readouterr().err, "cannot load")
    assert snapshot(out) == before  # no settings.yaml, no step_000.png, no chain record
    assert cli("telephone", picture, "-o", out, "--steps", "1", *TINY) == 0  # the retry: no --force
    assert (out / "step_001.png").is_file()


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_failed_video_game_and_run_retry_without_force(clip: Path, not_a_model: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    game = tmp_path / "game"
    one_line_error(cli("telephone", clip, "-o", game, "--steps", "1", *TINY, "--model", not_a_model),
                   capsys.readouterr().err, "cannot load")
    assert not game.exists()  # models load before extract writes the frames and the settings
    assert cli("telephone", clip, "-o", game, "--steps", "1", *TINY) == 0
    run = tmp_path / "run"
    capsys.readouterr()
    assert cli("run", clip, "-o", run, *TINY, "--model", not_a_model) == 1  # after extract (kept: real work)
    assert "cannot load" in capsys.readouterr().err.splitlines()[-1]
    assert cli("run", clip, "-o", run, *TINY) == 0


# -- 2. the telephone game on the folder of a run -----------------------------------------------------


def test_telephone_refuses_a_runs_folder(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Round 1 of the game is prompts.csv and dreams/: on a run's folder it would recaption and repaint
    them. One line naming a fresh folder; the folder (its settings.yaml too) untouched."""
    run = tmp_path / "clip"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    (run / "prompts.csv").write_text("filename,prompt\n000001.png,a red fox\n", encoding="utf-8")
    before = snapshot(run)
    capsys.readouterr()
    one_line_error(cli("telephone", clip, "-o", run, *TINY), capsys.readouterr().err,
                   "video2dream run", "fresh -o folder", "clip-telephone")
    assert snapshot(run) == before


# -- 4. model paths checked before anything loads -----------------------------------------------------


@pytest.mark.parametrize(("flags", "named"), [
    (("--model", "./nosuch"), "--model"),
    (("--lora", "./nosuch"), "--lora"),
    (("--lora", "../nosuch.safetensors:0.5"), "--lora"),
    (("--vae", "~/nosuch-vae"), "--vae"),
    (("--preview-vae", "/nosuch/taesdxl"), "--preview-vae"),
    (("--refiner", "nosuch/refiner/folder"), "--refiner"),
    (("--controlnet", "depth:./nosuch-controlnet"), "--controlnet"),
    (("--controlnet", "depth", "--depth-model", "./nosuch-dpt"), "--depth-model"),
])
def test_missing_model_paths_of_generate(flags: tuple[str, ...], named: str, clip: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    (run / "prompts.csv").write_text("filename,prompt\n000001.png,a red fox\n", encoding="utf-8")
    before = snapshot(run)
    capsys.readouterr()
    one_line_error(cli("generate", run, *flags), capsys.readouterr().err, named, "does not exist",
                   flags[1].split(":")[-1] if flags[1].count(":") == 1 and "depth" in flags[1] else "nosuch")
    assert snapshot(run) == before
    one_line_error(cli("run", clip, "-o", tmp_path / "new", *TINY, *flags), capsys.readouterr().err, named)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(("flags", "named"), [
    (("--caption-model", "./nosuch-blip"), "--caption-model"),
    (("--clip-model", "ViT-B-32/./nosuch.safetensors"), "--clip-model"),
    (("--clip-model", "./nosuch-clip/weights"), "--clip-model"),
])
def test_missing_model_paths_of_interrogate(flags: tuple[str, ...], named: str, clip: Path, picture: Path,
                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    before = snapshot(run)
    capsys.readouterr()
    one_line_error(cli("interrogate", run, "--mode", "fast", *flags), capsys.readouterr().err, named,
                   "does not exist")
    assert snapshot(run) == before
    one_line_error(cli("telephone", picture, "-o", tmp_path / "chain", *TINY, *flags), capsys.readouterr().err,
                   named, "does not exist")
    assert not (tmp_path / "chain").exists()


def test_hub_ids_and_existing_paths_are_not_refused(tmp_path: Path) -> None:
    from video2dream.models.paths import check_model_paths, model_sources
    from video2dream.settings import resolve

    folder = tmp_path / "my-sdxl"
    folder.mkdir()
    s = resolve(preset="tiny", overrides={"generate": {"model": str(folder), "vae": "owner/name",
                                                       "refiner": "stabilityai/stable-diffusion-xl-refiner-1.0"}})
    check_model_paths(s)
    assert model_sources(s) == [("generate.model", str(folder))]


# -- 5. the first use's slow builds are said ----------------------------------------------------------


def test_building_a_tiny_model_is_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from video2dream.models import hub

    (tmp_path / "fake_builder.py").write_text(
        "def build(dest):\n    (dest / 'config.json').write_text('{}')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(hub.TINY_MODELS, "tiny:fake", ("fake_builder", "build"))
    monkeypatch.setenv("VIDEO2DREAM_CACHE", str(tmp_path / "cache"))
    folder = hub.tiny_model_dir("tiny:fake")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "building the tiny model tiny:fake (first use" in err and str(folder) in err
    assert hub.tiny_model_dir("tiny:fake") == folder
    assert capsys.readouterr().err == ""  # built: nothing more to say
    sys.modules.pop("fake_builder", None)


def test_building_label_tables_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from video2dream.models.hub import cache_dir
    from video2dream.models.interrogator import TABLES, Interrogator, _say_if_building_tables

    _, _, name = Interrogator._parse("tiny:clip")
    _say_if_building_tables(tmp_path, name, "tiny:clip")
    assert "building CLIP Interrogator's label tables for tiny:clip (first use" in capsys.readouterr().err
    stem = name.replace("/", "_")
    for table in TABLES:  # the tables of the shared cache, as built by an earlier command
        shutil.copy(cache_dir() / "clip-interrogator" / f"{stem}_{table}.safetensors", tmp_path)
    _say_if_building_tables(tmp_path, name, "tiny:clip")
    assert capsys.readouterr().err == ""
