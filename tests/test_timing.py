"""Keyframes on the beat and at shot cuts (extract --at/--every/--scene-cuts), assemble --transition
flow, and generate --color-coherence lab."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, cli, make_clip, one_line_error, snapshot
from PIL import Image

from video2dream import media
from video2dream.errors import UserError
from video2dream.tables import read_frames

X264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")
# 120 BPM: a 20 ms 1 kHz click every 0.5 s from 0.25 s. The picture: frame N is grey N*4 at 10 fps,
# so a pixel tells which frame was taken.
CLICKS = [0.25 + 0.5 * k for k in range(12)]
CLICK = "aevalsrc='if(lt(mod(t-0.25\\,0.5)\\,0.02)*gte(t\\,0.25),sin(2*PI*1000*t),0)':s=44100:d=6"
GREY = "color=black:size=64x48:rate=10:duration=6,format=rgb24,geq=r='N*4':g='N*4':b='N*4'"
# Three shots: red 2.2 s, blue 2.0 s, white 1.8 s, at 25 fps.
SHOTS = ("color=red:size=64x48:rate=25:duration=2.2[a];color=blue:size=64x48:rate=25:duration=2[b];"
         "color=white:size=64x48:rate=25:duration=1.8[c];[a][b][c]concat=n=3[out0]")
CUTS = [2.2, 4.2]


def rows(run: Path) -> list[tuple[str, float, str]]:
    with open(run / "frames.csv", encoding="utf-8") as f:
        return [(r["filename"], float(r["time"]), r["kind"]) for r in csv.DictReader(f)]


def level(path: Path) -> float:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel((32, 24))[0]


def colour(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel((32, 24))


@pytest.fixture(scope="module")
def click_clip(clip_dir: Path) -> Path:
    return make_clip(clip_dir / "clicks.mp4", GREY, CLICK, args=(*X264, "-c:a", "aac", "-shortest"))


@pytest.fixture(scope="module")
def shots_clip(clip_dir: Path) -> Path:
    return make_clip(clip_dir / "shots.mp4", SHOTS, CLICK, args=(*X264, "-c:a", "aac", "-shortest"))


@pytest.fixture(scope="module")
def on_beats(click_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("beats") / "run"
    assert cli("extract", click_clip, "-o", run, "--at", "beats") == 0
    return run


def test_beats_of_a_click_track(on_beats: Path) -> None:
    found = rows(on_beats)
    assert found[0][1:] == (0.0, "tick")  # the picture starts where the source's does
    beats = [t for _, t, kind in found[1:]]
    assert {kind for *_, kind in found[1:]} == {"beat"}
    assert all(min(abs(t - c) for c in CLICKS) <= 0.03 for t in beats), beats
    assert len(beats) >= len(CLICKS) - 2  # the tracker may leave out the first or last click
    for name, t, _ in found:  # the frame on screen at each beat: frame floor(t * 10)
        assert level(on_beats / "frames" / name) / 4 == pytest.approx(int(t * 10), abs=0.3), (name, t)


def test_every_second_beat(on_beats: Path, click_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", click_clip, "-o", run, "--at", "beats", "--every", "2") == 0
    every = [t for _, t, _ in rows(run)[1:]]
    assert every == [t for _, t, _ in rows(on_beats)[1:]][::2]


def test_scene_cuts(shots_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", shots_clip, "-o", run, "--scene-cuts") == 0
    found = rows(run)
    cuts = [t for _, t, kind in found if kind == "cut"]
    assert cuts == pytest.approx(CUTS, abs=1 / 25 + 1e-6)
    assert [kind for *_, kind in found] == ["tick", "tick", "tick", "cut", "tick", "tick", "cut", "tick"]
    shown = {(255, 0, 0): "red", (0, 0, 255): "blue", (255, 255, 255): "white"}

    def named(name: str) -> str:
        c = colour(run / "frames" / name)
        return min(shown.items(), key=lambda kv: sum((a - b) ** 2 for a, b in zip(c, kv[0], strict=True)))[1]

    # The keyframe at a cut is the first frame of the new shot; the tick just before it the old one's.
    assert [named(n) for n, *_ in found] == ["red", "red", "red", "blue", "blue", "blue", "white", "white"]
    # read_frames gives the kinds to the stages after extract
    assert read_frames(run / "frames.csv")["kind"].tolist()[3] == "cut"


def test_beats_and_cuts_together(shots_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", shots_clip, "-o", run, "--at", "beats", "--scene-cuts") == 0
    found = rows(run)
    assert found[0][1:] == (0.0, "tick")
    assert [t for _, t, kind in found if kind == "cut"] == pytest.approx(CUTS, abs=1 / 25 + 1e-6)
    beats = [t for _, t, kind in found if kind == "beat"]
    assert len(beats) >= 4 and all(min(abs(t - c) for c in CLICKS) <= 0.03 for t in beats), beats


def test_beats_on_a_silent_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    silent = make_clip(tmp_path / "silent.mp4", "testsrc2=size=64x48:rate=10:duration=2", args=X264)
    assert cli("extract", silent, "-o", tmp_path / "new", "--at", "beats") == 1
    one_line_error(1, capsys.readouterr().err, "no sound", "--at seconds")
    assert not (tmp_path / "new").exists()
    # A folder extracted before: left exactly as it was, its settings too.
    assert cli("extract", silent, "-o", tmp_path / "run") == 0
    before = snapshot(tmp_path / "run")
    capsys.readouterr()
    assert cli("extract", silent, "-o", tmp_path / "run", "--at", "beats") == 1
    one_line_error(1, capsys.readouterr().err, "no sound")
    assert snapshot(tmp_path / "run") == before


def test_silent_soundtrack_is_found_before_librosa_loads(tmp_path: Path) -> None:
    """A muted soundtrack is refused from its PCM at once: librosa (whose first import took a minute
    on a busy machine) is not imported for it. A fresh process: this one may hold librosa already."""
    import sys

    muted = make_clip(tmp_path / "muted.mp4", "testsrc2=size=64x48:rate=10:duration=2",
                      "anullsrc=r=22050:cl=mono:d=2", args=(*X264, "-c:a", "aac", "-shortest"))
    code = ("import sys; from video2dream.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print('code', e.code)\n"
            "print('librosa imported' if 'librosa' in sys.modules else 'librosa not imported')")
    out = subprocess.run([sys.executable, "-c", code, "extract", str(muted), "-o", str(tmp_path / "run"),
                          "--at", "beats"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    one_line_error(1, out.stderr, "is silent", "--at seconds")
    assert out.stdout.split("\n")[:2] == ["code 1", "librosa not imported"], out


def test_librosa_loading_is_said_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from video2dream.timing import import_librosa

    monkeypatch.delitem(sys.modules, "librosa", raising=False)
    assert import_librosa("--at beats").__name__ == "librosa"
    assert "loading librosa" in capsys.readouterr().err
    import_librosa("--at beats")  # imported now: nothing more to say
    assert capsys.readouterr().err == ""


def test_frames_csv_kind_column(tmp_path: Path) -> None:
    """A frames.csv made before the column existed holds ticks; a kind that is none of the three is refused."""
    old = tmp_path / "frames.csv"
    old.write_text("filename,time\n000001.png,0.000000\n000002.png,1.000000\n", encoding="utf-8")
    assert read_frames(old)["kind"].tolist() == ["tick", "tick"]
    old.write_text("filename,time,kind\n000001.png,0.0,tick\n000002.png,1.0,drop\n", encoding="utf-8")
    with pytest.raises(UserError, match="row 3.*'drop'"):
        read_frames(old)


def test_bad_timing_settings_are_one_line(click_clip: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("extract", click_clip, "-o", tmp_path / "a", "--at", "bars") == 1
    one_line_error(1, capsys.readouterr().err, "--at", "seconds, beats")
    assert cli("extract", click_clip, "-o", tmp_path / "b", "--at", "beats", "--every", "0") == 1
    one_line_error(1, capsys.readouterr().err, "--every")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert cli("extract", click_clip, "-o", tmp_path / "c") == 0
    before = snapshot(tmp_path / "c")
    capsys.readouterr()
    assert cli("generate", tmp_path / "c", "--color-coherence", "rgb") == 1
    one_line_error(1, capsys.readouterr().err, "--color-coherence", "none, lab")
    assert cli("assemble", tmp_path / "c", "--transition", "morf") == 1
    one_line_error(1, capsys.readouterr().err, "--transition", "flow")
    assert snapshot(tmp_path / "c") == before


# -- assemble --transition flow ------------------------------------------------------------------

BEEP = "aevalsrc='if(between(t,1.5,1.6),sin(2*PI*1000*t),0)':sample_rate=44100:duration=3"


def decode_grey(path: Path) -> np.ndarray:
    p = media.probe(path)
    raw = subprocess.run([media.ffmpeg_path(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray",
                          "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, p.height, p.width)


def onset(path: Path, rate: int = 8000) -> float:
    raw = subprocess.run([media.ffmpeg_path(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar",
                          str(rate), "-f", "s16le", "-"], capture_output=True, check=True).stdout
    a = np.abs(np.frombuffer(raw, np.int16).astype(float))
    return float(np.argmax(a > 0.3 * a.max())) / rate


def test_flow_moves_the_picture_and_keeps_time(clip_dir: Path, tmp_path: Path) -> None:
    """A square 24 px further right in the next picture: half way between, flow shows it half way
    (motion), where a crossfade shows two faint squares. Duration and sound as the source's."""
    clip = make_clip(tmp_path / "beep.mp4", "color=black:size=256x192:rate=10:duration=3", BEEP,
                     args=(*X264, "-c:a", "aac"))
    run = tmp_path / "run"
    assert cli("extract", clip, "-o", run) == 0
    (run / "dreams").mkdir()
    yy, xx = np.mgrid[0:48, 0:48]
    tex = np.stack([xx * 5, yy * 5, 255 - xx * 5], -1).astype(np.uint8)
    for k, x in zip((1, 2, 3), (40, 64, 40), strict=True):
        a = np.full((192, 256, 3), 40, np.uint8)
        a[72:120, x:x + 48] = tex
        Image.fromarray(a).save(run / "dreams" / f"{k:06d}.png")
    assert cli("assemble", run, "--transition", "flow", "--out-fps", "10") == 0
    out = run / "dream.mp4"
    video = decode_grey(out)
    assert len(video) == 30
    assert media.probe(out).duration == pytest.approx(3.0, abs=0.1)
    assert onset(out) == pytest.approx(1.5, abs=0.025)
    row = video[5, 110].astype(int)  # t = 0.5 s, a row through the square
    lit = np.flatnonzero(np.abs(row - row[0]) > 40)
    assert lit.min() == pytest.approx(52, abs=5) and lit.max() == pytest.approx(52 + 47, abs=5), lit
    assert cli("assemble", run, "--transition", "crossfade", "--out-fps", "10") == 0
    row = decode_grey(out)[5, 110].astype(int)
    assert np.flatnonzero(np.abs(row - row[0]) > 40).min() < 45  # the blend: both squares, faint


# -- generate --color-coherence lab --------------------------------------------------------------


def test_match_lab_gives_the_reference_statistics(tmp_path: Path) -> None:
    from video2dream.color import lab_stats, match_lab

    rng = np.random.default_rng(1)
    dream = Image.fromarray((rng.random((40, 60, 3)) * 120 + 60).astype(np.uint8))
    ref = tmp_path / "ref.png"  # warmer, flatter and of another size (only its statistics count)
    Image.fromarray(((rng.random((30, 20, 3)) * 90 + 80) * [1.0, 0.85, 0.7]).astype(np.uint8)).save(ref)
    mean_r, std_r = lab_stats(Image.open(ref))
    mean, std = lab_stats(match_lab(dream, ref))
    assert np.abs(lab_stats(dream)[0] - mean_r).max() > 4  # it had far to go
    assert mean == pytest.approx(mean_r, abs=0.5)
    assert std == pytest.approx(std_r, abs=0.5)


@pytest.mark.usefixtures("one_torch_thread")
def test_color_coherence_moves_the_dream_and_its_key(tmp_path: Path) -> None:
    from video2dream.color import lab_stats
    from video2dream.models.cache import ModelCache
    from video2dream.pngmeta import read_png_text
    from video2dream.runfolder import RunFolder
    from video2dream.settings import resolve
    from video2dream.stages.generate import generate, plan

    clip = make_clip(tmp_path / "red.mp4", "color=0xC03020:size=64x48:rate=10:duration=1", args=X264)
    run = tmp_path / "run"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    (run / "prompts.csv").write_text("filename,time,prompt,negative_prompt\n000001.png,0.0,a red fox,\n",
                                     encoding="utf-8")
    folder, models = RunFolder(run), ModelCache()  # the tiny painter loaded once for both
    tiny = resolve(folder.saved_settings())
    assert len(generate(folder, tiny, models=models).painted) == 1
    dream = run / "dreams" / "000001.png"
    plain, plain_text = Image.open(dream).copy(), read_png_text(dream)
    lab = resolve(folder.saved_settings(), overrides={"generate": {"color_coherence": "lab"}})
    assert len(generate(folder, lab, models=models).painted) == 1  # its key changed: painted again
    matched, text = Image.open(dream).copy(), read_png_text(dream)
    assert text["video2dream"] != plain_text["video2dream"]
    assert "Color coherence: LAB" in text["parameters"] and "Color coherence" not in plain_text["parameters"]
    frame = lab_stats(Image.open(run / "frames" / "000001.png"))[0]
    before, after = lab_stats(plain)[0], lab_stats(matched)[0]
    assert np.abs(after - frame).max() < 2.0 < np.abs(before - frame).max()
    # none: the key of before the setting existed (that dream would be current again at once)
    none = resolve(folder.saved_settings(), overrides={"generate": {"color_coherence": "none"}})
    assert plan(folder, none)[0][0].key == plain_text["video2dream"]
