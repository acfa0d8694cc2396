"""The model stages and `run`, end to end through the CLI on the tiny models (--preset tiny)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, make_clip, pixels, snapshot
from PIL import Image

from video2dream import media
from video2dream.cli import main
from video2dream.pngmeta import parse_parameters, read_parameters
from video2dream.runfolder import TMP_MARK, RunFolder

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SEED = 10
NEGATIVE = "blurry, lowres"
BASE_ARGS = ("--preset", "tiny", "--seed", str(SEED), "--negative-prompt", NEGATIVE)
FRAMES = 4  # a 4 s clip at 1 fps
SIZE = (320, 192)  # the tiny preset's 65536 pixels at the clip's 4:3


# -- helpers -------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str] | None, *args: str | Path) -> tuple[int, str, str]:
    """main(args) -> (exit code, stdout, stderr); output is captured only when capsys is given."""
    if capsys is not None:
        capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str] | None, *args: str | Path) -> str:
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert "Traceback" not in err
    return err


def copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)  # copy2: mtimes kept
    return dest


def dreams(run: Path) -> list[Path]:
    return sorted(p for p in (run / "dreams").glob("*.png") if TMP_MARK not in p.name)


def mtimes(run: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in dreams(run)}


def changed(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return sorted(n for n in after if before.get(n) != after[n])


def params(png: Path) -> dict[str, str]:
    text = read_parameters(png)
    assert text, f"{png} has no parameters chunk"
    return parse_parameters(text)


def prompts(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "prompts.csv", dtype=str, keep_default_na=False)


def leftovers(run: Path) -> list[str]:
    return [str(p) for p in run.rglob("*") if TMP_MARK in p.name]


def quiet(err: str) -> bool:
    """Only our own lines on stderr: no loading bars, warnings or tracebacks."""
    return all(line.startswith("video2dream: ") for line in err.splitlines())


def valid_png(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return read_parameters(path) is not None
    except Exception:
        return False


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pipeline-clip")
    return make_clip(
        d / "clip.mp4",
        "testsrc2=size=160x120:rate=25:duration=4",
        "sine=frequency=440:sample_rate=44100:duration=4",
        args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"),
    )


@pytest.fixture(scope="module")
def base(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole `run --preset tiny` of the clip; tests copy it, none changes it."""
    run = tmp_path_factory.mktemp("pipeline-base") / "run"
    ok(None, "run", clip, "-o", run, *BASE_ARGS)
    return run


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIDEO2DREAM_DEBUG", None)
    env["OMP_NUM_THREADS"] = "1"  # see one_thread
    return env


# -- 1. a whole run ------------------------------------------------------------------------------


def test_run_makes_every_output(base: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = base / "dream.mp4"
    assert video.is_file()
    made, source = media.probe(video), media.probe(clip)
    assert abs(made.duration - source.duration) <= 1 / 30 + 1e-3, (made.duration, source.duration)
    assert made.has_audio

    frames = pd.read_csv(base / "frames.csv", dtype=str)
    assert len(frames) == FRAMES
    header = (base / "prompts.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:2] == ["filename", "prompt"]
    assert {"time", "caption", "negative_prompt"} <= set(header)
    df = prompts(base)
    assert df["filename"].tolist() == frames["filename"].tolist()
    assert all(p.strip() for p in df["prompt"])

    assert [p.name for p in dreams(base)] == df["filename"].tolist()
    for row in df.itertuples(index=False):
        png = base / "dreams" / row.filename
        with Image.open(png) as im:
            assert im.size == SIZE
        negative = ", ".join(t for t in (row.negative_prompt, NEGATIVE) if t)
        # The text is exactly A1111's: the prompt as written, then the negative prompt.
        assert read_parameters(png).startswith(f"{row.prompt}\nNegative prompt: {negative}\n")
        p = params(png)
        assert p["prompt"] == row.prompt
        assert p["negative_prompt"] == negative
        assert p["Seed"] == str(SEED + int(Path(row.filename).stem))
        assert p["Steps"] == "4"
        assert p["Size"] == f"{SIZE[0]}x{SIZE[1]}"
        assert p["CFG scale"] == "5.0"
        assert p["Model"] == "tiny-sdxl"
        assert "Denoising strength" not in p
    assert not leftovers(base)
    assert RunFolder(base).lock_holder() is None

    code, out, _ = cli(capsys, "status", base)
    assert code == 0
    assert f"{FRAMES}/{FRAMES} rows current" in out
    assert f"{FRAMES}/{FRAMES} dreams current" in out
    assert "dream.mp4" in out


# -- 2. reruns and hand edits --------------------------------------------------------------------

EDITED = 'a "quoted" dream, with commas, and \'single\' quotes,\nвторая строка: 夢の中の猫 🐱 — ünïcödé'


def test_rerun_repaints_nothing_and_an_edit_repaints_one_frame(
    base: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy(base, tmp_path / "run")
    before = mtimes(run)
    err = ok(capsys, "run", clip, "-o", run, *BASE_ARGS)
    assert "0 dream(s) painted" in err
    assert mtimes(run) == before

    df = prompts(run)
    original = df.loc[1, "prompt"]
    df.loc[1, "prompt"] = EDITED
    df.to_csv(run / "prompts.csv", index=False)
    assert EDITED in prompts(run)["prompt"].tolist()

    code, out, _ = cli(capsys, "status", run)
    assert f"{FRAMES - 1}/{FRAMES} rows current, 1 edited by hand" in out
    assert f"{FRAMES - 1}/{FRAMES} dreams current, 1 stale" in out

    err = ok(capsys, "generate", run)
    assert "1 dream(s) painted" in err
    assert quiet(err)
    after = mtimes(run)
    assert changed(before, after) == ["000002.png"]
    text = read_parameters(run / "dreams" / "000002.png")
    assert text.startswith(f"{EDITED}\nNegative prompt: {NEGATIVE}\n")
    assert params(run / "dreams" / "000002.png")["prompt"] == EDITED
    for name in ("000001.png", "000003.png", "000004.png"):
        assert params(run / "dreams" / name)["prompt"] == df.set_index("filename").loc[name, "prompt"]

    # interrogate keeps the hand-edited row, and says so.
    err = ok(capsys, "interrogate", run)
    assert "hand-edited" in err and "000002.png" in err
    assert quiet(err)
    assert prompts(run).loc[1, "prompt"] == EDITED
    assert prompts(run)["prompt"].tolist()[2:] == df["prompt"].tolist()[2:]
    assert ok(capsys, "generate", run).count("0 dream(s) painted") == 1
    assert mtimes(run) == after

    # A negative prompt edited by hand: that frame only, and both negatives in its metadata.
    edited = prompts(run)
    edited.loc[2, "negative_prompt"] = "ugly"
    edited.to_csv(run / "prompts.csv", index=False)
    ok(capsys, "generate", run)
    assert changed(after, mtimes(run)) == ["000003.png"]
    assert params(run / "dreams" / "000003.png")["negative_prompt"] == f"ugly, {NEGATIVE}"
    after = mtimes(run)

    # Saved again by an editor with a byte-order mark and CRLF line ends (inside the multi-line
    # cell too): the same words, so nothing to do.
    text = (run / "prompts.csv").read_text(encoding="utf-8")
    (run / "prompts.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    assert "0 dream(s) painted" in ok(capsys, "generate", run)
    assert "0 row(s) written" in ok(capsys, "interrogate", run)
    assert params(run / "dreams" / "000002.png")["prompt"] == EDITED
    assert mtimes(run) == after

    # --force writes it again (the tiny models are deterministic: the original words come back).
    ok(capsys, "interrogate", run, "--force")
    again = prompts(run)
    assert again.loc[1, "prompt"] != EDITED
    assert again.loc[1, "prompt"] == original
    code, out, _ = cli(capsys, "status", run)
    assert f"{FRAMES}/{FRAMES} rows current" in out
    assert f"{FRAMES - 2}/{FRAMES} dreams current, 2 stale" in out  # the two edited frames
    assert again.loc[2, "negative_prompt"] == ""


# -- 3. seeds ------------------------------------------------------------------------------------


def test_same_seed_same_pixels(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        ok(capsys, "run", clip, "-o", run, "--preset", "tiny", "--seed", "5", "--end", "2")
    assert [p.name for p in dreams(a)] == ["000001.png", "000002.png"]
    assert prompts(a).equals(prompts(b))
    for pa, pb in zip(dreams(a), dreams(b), strict=True):
        assert np.array_equal(pixels(pa), pixels(pb)), pa.name
        assert params(pa)["Seed"] == params(pb)["Seed"] == str(5 + int(pa.stem))
    first = {p.name: pixels(p) for p in dreams(a)}

    ok(capsys, "generate", b, "--seed", "6")
    for p in dreams(b):
        assert params(p)["Seed"] == str(6 + int(p.stem))
        assert not np.array_equal(pixels(p), first[p.name]), p.name

    ok(capsys, "generate", b, "--seed", "5", "--seed-mode", "fixed")
    assert [params(p)["Seed"] for p in dreams(b)] == ["5", "5"]


# -- 4. settings are saved and reused ------------------------------------------------------------


def test_settings_reuse_and_what_repaints(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    ok(capsys, "extract", clip, "-o", run, "--preset", "tiny", "--end", "2")
    # Without --preset: the run folder's saved settings say tiny models (the real ones would fail
    # offline), and the CPU.
    ok(capsys, "interrogate", run)
    err = ok(capsys, "generate", run, "--steps", "3")
    assert "2 dream(s) painted" in err
    saved = yaml.safe_load((run / "settings.yaml").read_text(encoding="utf-8"))
    assert saved["generate"]["model"] == "tiny:sdxl"
    assert saved["generate"]["steps"] == 3
    assert saved["interrogate"]["caption_model"] == "tiny:blip"
    assert saved["interrogate"]["clip_model"] == "tiny:clip"
    assert saved["device"] == "cpu"
    assert all(params(p)["Steps"] == "3" for p in dreams(run))

    before = mtimes(run)
    assert "0 dream(s) painted" in ok(capsys, "generate", run)
    assert mtimes(run) == before

    ok(capsys, "generate", run, "--steps", "2")
    after = mtimes(run)
    assert changed(before, after) == sorted(before)
    assert all(params(p)["Steps"] == "2" for p in dreams(run))

    ok(capsys, "generate", run, "--guidance", "3")
    before, after = after, mtimes(run)
    assert changed(before, after) == sorted(before)
    assert all(params(p)["CFG scale"] == "3.0" for p in dreams(run))

    ok(capsys, "assemble", run)
    ok(capsys, "assemble", run, "--transition", "crossfade")
    assert yaml.safe_load((run / "settings.yaml").read_text())["assemble"]["transition"] == "crossfade"
    assert "0 dream(s) painted" in ok(capsys, "generate", run)
    assert mtimes(run) == after


# -- 5. img2img ----------------------------------------------------------------------------------


def test_img2img(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy(base, tmp_path / "run")
    before = mtimes(run)
    err = ok(capsys, "generate", run, "--strength", "0.5")
    assert f"{FRAMES} dream(s) painted" in err
    assert quiet(err)
    assert changed(before, mtimes(run)) == sorted(before)
    for p in dreams(run):
        assert params(p)["Denoising strength"] == "0.5"
        assert "Denoising strength: 0.5" in read_parameters(p)
        with Image.open(p) as im:
            assert im.size == SIZE


# -- 6. interrupt and resume ---------------------------------------------------------------------


def _interrupt(cmd: list[str], ready, sig: int, tmp_path: Path) -> tuple[int, str]:
    """Start `python -m video2dream CMD`, wait until ready() is true, send sig; (code, stderr)."""
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, "-m", "video2dream", *cmd], stdout=subprocess.DEVNULL,
                                stderr=err, env=subprocess_env(), cwd=ROOT)
        try:
            deadline = time.monotonic() + 240
            while not ready():
                if proc.poll() is not None:
                    pytest.fail(f"it ended (code {proc.returncode}) before it could be interrupted: "
                                + err_path.read_text(encoding="utf-8"))
                if time.monotonic() > deadline:
                    pytest.fail("nothing was written in time: " + err_path.read_text(encoding="utf-8"))
                time.sleep(0.01)
            proc.send_signal(sig)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, err_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_generate_resumes(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      sig: int) -> None:
    run = copy(base, tmp_path / "run")
    shutil.rmtree(run / "dreams")
    code, err = _interrupt(["generate", str(run), "--batch-size", "1", "--steps", "30"],
                           lambda: bool(dreams(run)), sig, tmp_path)
    assert code == 130, err
    assert "Resume with" in err and f"video2dream generate {run}" in err
    assert "Traceback" not in err
    assert not leftovers(run)
    assert RunFolder(run).lock_holder() is None
    done = mtimes(run)
    assert 1 <= len(done) < FRAMES, "finished before the signal: nothing was interrupted"
    assert all(valid_png(p) for p in dreams(run))

    err = ok(capsys, "generate", run)  # the settings of the interrupted command were saved
    assert f"{FRAMES - len(done)} dream(s) painted at 320x192, {len(done)} up to date" in err
    after = mtimes(run)
    assert len(after) == FRAMES
    assert {n: after[n] for n in done} == done
    assert all(params(p)["Steps"] == "30" for p in dreams(run))


def test_interrupted_interrogate_keeps_finished_rows(base: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = copy(base, tmp_path / "run")
    (run / "prompts.csv").unlink()
    code, err = _interrupt(["interrogate", str(run), "--batch-size", "1", "--mode", "best"],
                           lambda: (run / "prompts.csv").exists(), signal.SIGINT, tmp_path)
    assert code == 130, err
    assert "Resume with" in err and "Traceback" not in err
    assert not leftovers(run)
    df = prompts(run)
    assert 1 <= len(df) < FRAMES, "finished before the signal: nothing was interrupted"
    assert df["filename"].tolist() == [f"{i:06d}.png" for i in range(1, len(df) + 1)]
    assert all(p.strip() for p in df["prompt"])

    err = ok(capsys, "interrogate", run)
    assert f"{FRAMES - len(df)} row(s) written, {len(df)} up to date" in err
    again = prompts(run)
    assert len(again) == FRAMES
    assert again.iloc[: len(df)].equals(df)


# -- 7. long prompts -----------------------------------------------------------------------------


def test_a_long_prompt_is_reported_once(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy(base, tmp_path / "run")
    words = " ".join(f"word{i}" for i in range(150))
    df = prompts(run)
    df.loc[2, "prompt"] = words
    df.to_csv(run / "prompts.csv", index=False)
    err = ok(capsys, "generate", run)
    assert err.count("longer than the 77 tokens") == 1
    assert "1 dream(s) painted" in err
    cut = pd.read_csv(run / "truncated.csv", dtype=str, keep_default_na=False)
    assert cut["filename"].tolist() == ["000003.png"]
    assert cut.loc[0, "cut"].strip()
    assert cut.loc[0, "kept"] + cut.loc[0, "cut"] == words
    assert params(run / "dreams" / "000003.png")["prompt"] == words  # the metadata keeps it all


def test_damaged_dreams_are_painted_again(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy(base, tmp_path / "run")
    before = mtimes(run)
    png = run / "dreams" / "000001.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])  # cut short, as by a full disk
    (run / "dreams" / "000004.png").unlink()
    stray = run / "dreams" / f"000002{TMP_MARK}deadbeef.png"  # left by a killed write
    stray.write_bytes(b"half a png")
    err = ok(capsys, "generate", run)
    assert "2 dream(s) painted" in err
    assert changed(before, mtimes(run)) == ["000001.png", "000004.png"]
    assert all(valid_png(p) for p in dreams(run))
    assert not stray.exists()


# -- 8. bad input: a short error, and the run folder untouched ------------------------------------


def _write(name: str, text: str):
    def change(run: Path) -> None:
        (run / name).write_text(text, encoding="utf-8")
    return change


def _edit_prompts(**cells: str):
    def change(run: Path) -> None:
        df = prompts(run)
        for column, value in cells.items():
            df.loc[0, column] = value
        df.to_csv(run / "prompts.csv", index=False)
    return change


def _add_row(run: Path) -> None:
    df = prompts(run)
    extra = df.iloc[[0]].assign(filename="000999.png")
    pd.concat([df, extra]).to_csv(run / "prompts.csv", index=False)


def _rename_prompt_column(run: Path) -> None:
    path = run / "prompts.csv"
    head, rest = path.read_text(encoding="utf-8").split("\n", 1)
    path.write_text(head.replace("prompt", "text", 1) + "\n" + rest, encoding="utf-8")


# (case, changes to the run folder, command after RUN, words in the message)
BAD = [
    ("no prompts.csv", lambda run: (run / "prompts.csv").unlink(), "generate", "missing"),
    ("unbalanced quotes", _write("prompts.csv", 'filename,prompt\n000001.png,"a cat\n000002.png,a dog\n'),
     "generate", "quotes"),
    ("no prompt column", _rename_prompt_column, "generate", "prompt"),
    ("row for a missing frame", _add_row, "generate", "000999.png"),
    ("a frame without a row", lambda run: prompts(run).iloc[1:].to_csv(run / "prompts.csv", index=False),
     "generate", "000001.png"),
    ("a frame twice", lambda run: pd.concat([prompts(run), prompts(run).iloc[[0]]]).to_csv(
        run / "prompts.csv", index=False), "generate", "more than once"),
    ("empty prompts.csv", _write("prompts.csv", ""), "generate", "empty"),
    ("prompts.csv not UTF-8", lambda run: (run / "prompts.csv").write_bytes(
        "filename,prompt\n000001.png,caf\xe9\n".encode("latin-1")), "generate", "prompts.csv"),
    ("settings.yaml broken", _write("settings.yaml", "generate: [steps: 3\n"), "generate", "settings.yaml"),
    ("empty prompt", _edit_prompts(prompt=""), "generate", "empty prompt"),
    ("blank prompt", _edit_prompts(prompt="   "), "generate", "empty prompt"),
    ("unknown model", None, "generate --model nobody/no-such-model", "nobody/no-such-model"),
    ("model folder missing", None, "generate --model ./no/such/folder", "no/such/folder"),
    ("unknown scheduler", None, "generate --scheduler NoSuchScheduler", "NoSuchScheduler"),
    ("strength 1.5", None, "generate --strength 1.5", "--strength"),
    ("strength -0.5", None, "generate --strength -0.5", "--strength"),  # (0 is the way back to text to image)
    ("width not a multiple of 8", None, "generate --width 100 --height 64", "multiple of 8"),
    ("width without height", None, "generate --width 128", "together"),
    ("steps 0", None, "generate --steps 0", "--steps"),
    ("seed mode", None, "generate --seed-mode random", "--seed-mode"),
    ("dtype fp8", None, "generate --dtype fp8", "fp8"),
    ("generate on cuda", None, "generate --device cuda", "cuda"),
    ("unknown caption model", None, "interrogate --caption-model nobody/nothing", "nobody/nothing"),
    ("unknown clip model", None, "interrogate --clip-model NoSuchArch/openai", "NoSuchArch"),
    ("clip model without pretrained", None, "interrogate --clip-model ViT-L-14", "NAME/PRETRAINED"),
    ("unknown mode", None, "interrogate --mode bogus", "bogus"),
    ("interrogate on cuda", None, "interrogate --device cuda", "cuda"),
    ("interrogate dtype", None, "interrogate --dtype fp8", "fp8"),
    ("run on cuda", None, "run", "cuda"),
]


@pytest.mark.parametrize("change, command, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_gives_a_short_error_and_touches_nothing(
    base: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change, command: str,
    words: str,
) -> None:
    if "cuda" in command + words and torch.cuda.is_available():
        pytest.skip("there is a CUDA device here")
    run = copy(base, tmp_path / "run")
    if change:
        change(run)
    before = snapshot(run)
    name, *rest = command.split()
    args = [name, clip, "-o", run, "--device", "cuda"] if name == "run" else [name, run, *rest]
    code, out, err = cli(capsys, *args)
    assert code == 1, err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    assert lines[0].startswith("video2dream: error:"), err
    assert words in err, err
    assert snapshot(run) == before


# -- 9. real videos ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["milk.mkv", "in1.mp4"])
def test_real_samples(samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    source = samples / name
    run = tmp_path / "run"
    ok(capsys, "run", source, "-o", run, "--preset", "tiny", "--fps", "1")
    made, probe = media.probe(run / "dream.mp4"), media.probe(source)
    assert abs(made.duration - probe.duration) <= 1 / 30 + 1e-3, (made.duration, probe.duration)
    assert made.has_audio == probe.has_audio
    assert len(dreams(run)) == len(pd.read_csv(run / "frames.csv")) == len(prompts(run))
    assert all(valid_png(p) for p in dreams(run))
