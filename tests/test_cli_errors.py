"""Bad input: a short `video2dream: error:` message, no traceback, and nothing touched."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, cli, make_clip, one_line_error, snapshot

from video2dream.cli import EXAMPLES


@dataclass
class Inputs:
    video: Path  # a good clip with sound
    silent: Path  # a good clip without sound
    run: Path  # a run folder made by a successful extract of video
    broken_run: Path  # the same, with an unbalanced quote in frames.csv
    no_csv: Path  # a folder with a file in it but no frames.csv
    missing: Path
    empty: Path
    text: Path  # a text file named .mp4
    audio_only: Path
    png: Path
    png_as_mp4: Path
    a_file: Path  # an existing file given as a run folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    d = tmp_path_factory.mktemp("bad-inputs")
    video = make_clip(
        d / "clip.mp4",
        "testsrc2=size=64x48:rate=10:duration=2",
        "sine=duration=2",
        args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"),
    )
    silent = make_clip(
        d / "silent.mp4",
        "testsrc2=size=64x48:rate=10:duration=2",
        args=("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    )
    run = d / "run"
    assert cli("extract", video, "-o", run, "--fps", "2") == 0
    assert cli("assemble", run, "--from", "frames", "--out-fps", "5") == 0
    broken = d / "broken-run"
    assert cli("extract", video, "-o", broken) == 0
    (broken / "frames.csv").write_text(
        'filename,time\n"000001.png,0.000000\n000002.png,1.000000\n', encoding="utf-8"
    )
    no_csv = d / "no-csv"
    no_csv.mkdir()
    (no_csv / "notes.txt").write_text("not a run folder\n", encoding="utf-8")
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    text = d / "text.mp4"
    text.write_text("this is not a video\n" * 20, encoding="utf-8")
    audio_only = make_clip(d / "tone.m4a", "sine=duration=1", args=("-c:a", "aac"))
    png = make_clip(d / "still.png", "testsrc2=size=64x48", args=("-frames:v", "1"))
    png_as_mp4 = d / "still-named.mp4"
    png_as_mp4.write_bytes(png.read_bytes())
    a_file = d / "a-file"
    a_file.write_text("I am a file\n", encoding="utf-8")
    return Inputs(video, silent, run, broken, no_csv, d / "missing.mp4", empty, text, audio_only,
                  png, png_as_mp4, a_file)


# (case, command line with {input} fields, what must stay as it was, words the message has)
CASES = [
    ("missing file", "extract {missing} -o {run}", "run", "not found"),
    ("empty file", "extract {empty} -o {run}", "run", "empty"),
    ("text file named .mp4", "extract {text} -o {run}", "run", "not a video"),
    ("audio only", "extract {audio_only} -o {run}", "run", "no video stream"),
    ("png as video", "extract {png} -o {run}", "run", "still image"),
    ("png named .mp4", "extract {png_as_mp4} -o {run}", "run", "still image"),
    ("run folder is a file", "extract {video} -o {a_file}", "a_file", "is a file"),
    ("fps 0", "extract {video} -o {run} --fps 0", "run", "--fps"),
    ("fps -1", "extract {video} -o {run} --fps -1", "run", "--fps"),
    ("end before start", "extract {video} -o {run} --start 1.5 --end 1", "run", "--end"),
    ("start past the end", "extract {video} -o {run} --start 9", "run", "past the end"),
    ("unknown preset", "extract {video} -o {run} --preset no-such", "run", "unknown preset"),
    ("config file missing", "extract {video} -o {run} --config {missing}", "run", "not found"),
    ("another video", "extract {silent} -o {run}", "run", "--force"),
    ("--audio without sound", "assemble {run} --from frames --audio {silent}", "run", "no audio"),
    ("audio path missing", "assemble {run} --from frames --audio {missing}", "run", "not found"),
    ("assemble without frames.csv", "assemble {no_csv} --from frames", "no_csv", "frames.csv"),
    ("assemble a missing folder", "assemble {missing} --from frames", "run", "does not exist"),
    ("malformed frames.csv", "assemble {broken_run} --from frames", "broken_run", "frames.csv"),
    ("assemble without dreams", "assemble {run}", "run", "missing"),
    ("out-fps 0", "assemble {run} --from frames --out-fps 0", "run", "--out-fps"),
    ("unknown transition", "assemble {run} --from frames --transition wipe", "run", "--transition"),
    ("mux-audio without sound", "mux-audio {run} {silent}", "run", "no audio"),
    ("mux-audio from a text file", "mux-audio {run} {text}", "run", "not a media file"),
    ("fps inf", "extract {video} -o {run} --fps inf", "run", "--fps"),
    ("fps 1e9", "extract {video} -o {run} --fps 1e9", "run", "--fps"),
    ("seed past 2^63-1", "generate {run} --seed 9223372036854775808", "run", "--seed"),
    ("dream of 8192x8192", "generate {run} --width 8192 --height 8192", "run", "4096x4096"),
    ("out-fps 1e9", "assemble {run} --from frames --out-fps 1e9", "run", "--out-fps"),
    ("crf 52", "assemble {run} --from frames --crf 52", "run", "--crf"),
    ("run with an unknown scheduler", "run {video} -o {run} --scheduler NoSuchScheduler", "run", "unknown scheduler"),
]


@pytest.mark.parametrize("command, keep, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_a_short_error_and_touches_nothing(
    inputs: Inputs, capsys: pytest.CaptureFixture[str], command: str, keep: str, words: str
) -> None:
    kept = getattr(inputs, keep)
    before = snapshot(kept)
    run_before = snapshot(inputs.run)
    capsys.readouterr()
    code = cli(*command.format(**vars(inputs)).split())
    out, err = capsys.readouterr()
    assert code != 0
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    assert lines[0].startswith("video2dream: error:"), err
    assert words in err, err
    assert "Traceback" not in err + out
    assert snapshot(kept) == before
    assert snapshot(inputs.run) == run_before
    assert not inputs.missing.exists()


def test_a_failed_first_command_leaves_no_folder(
    inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = tmp_path / "new-run"
    assert cli("extract", inputs.text, "-o", new) == 1
    assert not new.exists()
    assert cli("extract", inputs.video, "-o", new, "--fps", "0") == 1
    assert not new.exists()
    deeper = tmp_path / "new" / "deeper" / "run"  # the folders made on the way go too
    assert cli("extract", inputs.text, "-o", deeper) == 1
    assert not (tmp_path / "new").exists()
    # The lock cannot be taken: a read-only disk, or a full one when writing who holds it.
    real_open = os.open

    def read_only(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith(os.path.join(".video2dream", "lock")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for name, fake in (("open", read_only), ("pwrite", full)):
        with monkeypatch.context() as m:
            m.setattr(os, name, fake)
            assert cli("extract", inputs.video, "-o", deeper) == 1
        assert not (tmp_path / "new").exists()


def _subprocess(*args: str | Path, debug: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("VIDEO2DREAM_DEBUG", None)
    if debug:
        env["VIDEO2DREAM_DEBUG"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "video2dream", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_in_a_real_process_and_with_debug(inputs: Inputs) -> None:
    plain = _subprocess("extract", inputs.text, "-o", inputs.run, debug=False)
    assert plain.returncode == 1
    assert plain.stderr.startswith("video2dream: error:")
    assert "Traceback" not in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1

    debug = _subprocess("extract", inputs.text, "-o", inputs.run, debug=True)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "UserError" in debug.stderr


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(command, "--help") == 0
    text = capsys.readouterr().out
    assert "example:" in text
    assert EXAMPLES[command] in text


def test_top_level_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("--help") == 0
    assert "example:" in capsys.readouterr().out


@pytest.mark.parametrize("args, usage, error", [
    (["run"], "usage: video2dream run VIDEO -o RUN_DIR [options]",
     "video2dream run: error: the following arguments are required: VIDEO, -o/--output"),
    (["telephone", "cover.png"], "usage: video2dream telephone INPUT -o OUT_DIR [options]",
     "video2dream telephone: error: the following arguments are required: -o/--output"),
    (["generate"], "usage: video2dream generate RUN_DIR [options]",
     "video2dream generate: error: the following arguments are required: RUN_DIR"),
    (["generate", "runs/clip", "--nosuch"], "usage: video2dream generate RUN_DIR [options]",
     "video2dream generate: error: unrecognized arguments: --nosuch"),
    (["status", "runs/clip", "--fps", "2"], "usage: video2dream status [-h] [--json] RUN_DIR",
     "video2dream status: error: unrecognized arguments: --fps 2"),
], ids=["run without arguments", "telephone without -o", "generate without RUN_DIR", "unknown flag",
        "another command's flag"])
def test_a_usage_error_is_the_commands_short_usage_and_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], usage: str, error: str
) -> None:
    """A missing argument printed 32 lines of `run`'s usage; an unknown flag the top-level usage."""
    capsys.readouterr()
    assert cli(*args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(usage) and lines[1] == error, lines


def test_an_extra_cell_on_every_row_is_named_as_such(inputs: Inputs, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """pandas takes a first column for an index when every row is a cell longer than the header:
    the prompt was then called 'the filename'."""
    run = shutil.copytree(inputs.run, tmp_path / "run")
    names = sorted(p.name for p in (run / "frames").glob("*.png"))
    rows = "".join(f"{name},a cat, in the rain\n" for name in names)  # an unquoted comma
    (run / "prompts.csv").write_text("filename,prompt\n" + rows, encoding="utf-8")
    before = snapshot(run)
    capsys.readouterr()
    code = cli("generate", run)
    one_line_error(code, capsys.readouterr().err, "prompts.csv, row 2 (the header is row 1) has 3 cells but the "
                   "header names 2 columns", "not in double quotes")
    assert snapshot(run) == before


def test_an_unexpected_error_is_one_line_of_bounded_length(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence echoed a library's whole text (a 10,000-character path in an OSError)."""
    from video2dream import cli as cli_module

    def fails(args: object) -> int:
        raise RuntimeError("x" * 10_000 + "\nsecond line")

    monkeypatch.setattr(cli_module, "dispatch", fails)
    capsys.readouterr()
    assert cli("status", "anywhere") == 1
    err = capsys.readouterr().err
    assert err.startswith("video2dream: unexpected error: RuntimeError: xxx") and "VIDEO2DREAM_DEBUG=1" in err
    assert len(err.strip().splitlines()) == 1 and len(err) < 500, len(err)
