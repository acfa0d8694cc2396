"""Errors about a setting (issue 11): the library names the setting's path and a hint; each command
names the flag it uses for that setting, and a setting it has no flag for as `setting PATH`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli

from video2dream.cli import build_parser, command_flags
from video2dream.errors import SettingError, UserError
from video2dream.settings import resolve


def error_line(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """A command that must fail with one clean line; that line."""
    capsys.readouterr()
    code = cli(*args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("video2dream: error: "), err
    assert "unexpected error" not in err and "Traceback" not in err, err
    return lines[0].removeprefix("video2dream: error: ")


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- the command's own flag ----------------------------------------------------------------------------

# (command line, the line's start): settings are checked before any input is opened or folder made.
FLAGS = [
    ("telephone in.png -o {out} --steps-per-image 0", "--steps-per-image must be from 1 to 1000 steps, got 0"),
    ("telephone in.png -o {out} --steps 0", "--steps must be a whole number from 1 to 1000"),
    ("run in.mp4 -o {out} --caption-batch-size 0", "--caption-batch-size must be from 1 to 1024 frames, got 0"),
    ("run in.mp4 -o {out} --batch-size 0", "--batch-size must be from 1 to 64 frames, got 0"),
    ("run in.mp4 -o {out} --steps 0", "--steps must be from 1 to 1000 steps, got 0"),
    ("extract in.mp4 -o {out} --start 2 --end 1", "--end (1.0) must be after --start (2.0)"),
    ("telephone in.png -o {out} --crossfade 2", "--crossfade must be >= 0 and shorter than --hold (1.0 s)"),
    ("run in.mp4 -o {out} --vae a/b --preview-vae c/d", "give --vae or --preview-vae, not both"),
    ("run in.mp4 -o {out} --height 512", "give --width and --height together"),
    ("run in.mp4 -o {out} --min-length 40 --max-length 30", "--max-length (30) must be >= --min-length (40)"),
    ("telephone in.png -o {out} --dtype fp8", "--dtype 'fp8' is unknown"),
]


@pytest.mark.parametrize("command, start", FLAGS, ids=[c for c, _ in FLAGS])
def test_each_command_names_its_own_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, start: str
) -> None:
    out = tmp_path / "out"
    line = error_line(capsys, *command.format(out=out).split())
    assert line.startswith(start), line
    assert "generate.steps" not in line and "telephone.steps" not in line  # a typed flag: its own name only
    assert not out.exists()


def test_a_setting_without_a_flag_is_named_by_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = config(tmp_path, "generate:\n  pixels: 5\n")
    line = error_line(capsys, "run", "in.mp4", "-o", tmp_path / "out", "--config", bad)
    assert line == f"setting generate.pixels must be from 4096 to 16777216 pixels, got 5 (from config {bad})"
    # a setting this command has no flag for, though another command has one
    bad = config(tmp_path, "generate:\n  steps: 0\n")
    line = error_line(capsys, "extract", "in.mp4", "-o", tmp_path / "out", "--config", bad)
    assert line.startswith("setting generate.steps must be from 1 to 1000 steps, got 0"), line
    # a flag of this command, the value from a file: the flag, and the file's spelling
    bad = config(tmp_path, "telephone:\n  steps: 0\n")
    line = error_line(capsys, "telephone", "in.png", "-o", tmp_path / "out", "--config", bad)
    assert line.startswith("--steps must be") and f"(telephone.steps, from config {bad})" in line, line
    assert not (tmp_path / "out").exists()


def test_a_flagless_setting_raised_without_an_origin_says_where_it_lives() -> None:
    e = SettingError("generate.pixels", "must be from 4096 to 16777216 pixels, got 5")
    assert e.render({"generate.steps": "--steps"}) == (
        "setting generate.pixels must be from 4096 to 16777216 pixels, got 5 (in a --config file or settings.yaml)")


def test_command_flags_come_from_the_parser() -> None:
    parser = build_parser()
    telephone, run, generate = (command_flags(parser, c) for c in ("telephone", "run", "generate"))
    assert (telephone["generate.steps"], telephone["telephone.steps"]) == ("--steps-per-image", "--steps")
    assert (run["interrogate.batch_size"], run["generate.batch_size"]) == ("--caption-batch-size", "--batch-size")
    assert generate["generate.steps"] == "--steps" and "telephone.steps" not in generate
    assert command_flags(parser, "assemble")["assemble.source"] == "--from"
    assert "generate.pixels" not in run and command_flags(parser, "status") == {}


# -- the library: paths, no flags ----------------------------------------------------------------------

LIBRARY = [
    ({"generate": {"steps": 0}}, "generate.steps", "generate.steps must be from 1 to 1000 steps, got 0"),
    ({"generate": {"pixels": 5}}, "generate.pixels", "generate.pixels must be from 4096 to 16777216 pixels, got 5"),
    ({"telephone": {"steps": 0}}, "telephone.steps", "telephone.steps must be a whole number from 1 to 1000"),
    ({"interrogate": {"batch_size": "4"}}, "interrogate.batch_size", "interrogate.batch_size must be a whole number"),
    ({"extract": {"start": 2, "end": 1}}, "extract.end", "extract.end (1) must be after extract.start (2)"),
    ({"generate": {"height": 512}}, "generate.height", "give generate.width and generate.height together"),
    ({"generate": {"vae": "a/b", "preview_vae": "c/d"}}, "generate.vae",
     "give generate.vae or generate.preview_vae, not both; none turns one off"),
    ({"telephone": {"crossfade": 2.0}}, "telephone.crossfade",
     "telephone.crossfade must be >= 0 and shorter than telephone.hold (1.0 s), got 2.0"),
    ({"dtype": "fp8"}, "dtype", "dtype 'fp8' is unknown: choose from"),
]


@pytest.mark.parametrize("overrides, path, start", LIBRARY, ids=[p for _, p, _ in LIBRARY])
def test_the_library_names_the_setting_path(overrides: dict, path: str, start: str) -> None:
    with pytest.raises(SettingError) as caught:
        resolve(overrides=overrides)
    e = caught.value
    assert isinstance(e, UserError) and e.path == path
    assert str(e).startswith(start), str(e)
    assert "--" not in str(e) and "\n" not in str(e)  # no command line's words


def test_cross_setting_errors_carry_every_path_involved() -> None:
    cases = [({"extract": {"start": 2, "end": 1}}, {"extract.end", "extract.start"}),
             ({"generate": {"width": 512}}, {"generate.width", "generate.height"}),
             ({"generate": {"vae": "a/b", "preview_vae": "c/d"}}, {"generate.vae", "generate.preview_vae"}),
             ({"interrogate": {"min_length": 40, "max_length": 30}},
              {"interrogate.min_length", "interrogate.max_length"})]
    for overrides, paths in cases:
        with pytest.raises(SettingError) as caught:
            resolve(saved=overrides)  # from a file: no typed end to move the other
        assert set(caught.value.paths) == paths, overrides


def test_a_saved_bad_value_says_so(tmp_path: Path) -> None:
    with pytest.raises(SettingError) as caught:
        resolve(saved={"assemble": {"crf": 99}})
    e = caught.value
    assert str(e) == "assemble.crf must be from 0 (lossless) to 51 (x264's range), got 99 " \
                     "(in the run folder's settings.yaml)"
    assert e.render({"assemble.crf": "--crf"}).endswith(
        "(assemble.crf in the run folder's settings.yaml; give --crf to replace it)")
    assert e.render({}).startswith("setting assemble.crf") and "--config" in e.render({})


def test_model_errors_name_the_setting_too() -> None:
    """The models take plain arguments, yet their refusals say which setting to change."""
    from video2dream.models.devices import pick_dtype

    with pytest.raises(SettingError) as caught:
        pick_dtype("fp8", None)  # type: ignore[arg-type]
    assert caught.value.path == "dtype" and str(caught.value).startswith("dtype 'fp8' is unknown")


def test_a_user_error_names_its_settings_by_path_and_the_cli_by_its_flags() -> None:
    e = UserError("{morph.pacing} audio needs a soundtrack; give one with {assemble.audio} FILE, see {a.b}",
                  paths=("morph.pacing", "assemble.audio"))
    assert str(e) == "morph.pacing audio needs a soundtrack; give one with assemble.audio FILE, see {a.b}"
    assert e.render({"morph.pacing": "--pacing"}) == (
        "--pacing audio needs a soundtrack; give one with setting assemble.audio FILE, see {a.b}")
    plain = UserError("a file {named.like.this}.png")  # no paths: braces are the message's own
    assert str(plain) == plain.render({"named.like.this": "--x"}) == "a file {named.like.this}.png"


def test_a_library_error_is_shown_with_the_commands_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import make_clip

    silent = make_clip(tmp_path / "silent.mp4", "testsrc2=size=32x32:rate=5:duration=1")
    line = error_line(capsys, "extract", silent, "-o", tmp_path / "out", "--at", "beats")
    assert line == f"{silent} has no sound, so --at beats has no beats to follow; use --at seconds, or give a video " \
                   "with a soundtrack"
    assert not (tmp_path / "out").exists()
