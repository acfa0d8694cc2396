"""assemble and mux-audio: durations, sizes, the soundtrack and its sync, transitions, failures."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, ffmpeg, make_clip, run_ffmpeg
from PIL import Image

from video2dream import media

X264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")
GREY = "color=black:size=64x48:rate=10:duration=3,format=rgb24,geq=r='N*8':g='N*8':b='N*8'"
# Silence with a 1 kHz beep from 1.5 s to 1.6 s of the file.
BEEP = "aevalsrc='if(between(t,1.5,1.6),sin(2*PI*1000*t),0)':sample_rate=44100:duration=3"
OUT_FPS = 30.0


def info(path: Path) -> str:
    """ffmpeg -i's description of a file (there is no ffprobe)."""
    return subprocess.run(
        [ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    ).stderr


def decode(path: Path) -> np.ndarray:
    """Every frame of a video as an array (frames, height, width, 3)."""
    p = media.probe(path)
    raw = run_ffmpeg("-i", path, "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    return np.frombuffer(raw, np.uint8).reshape(-1, p.height, p.width, 3)


def sound(path: Path, rate: int = 8000) -> np.ndarray:
    raw = run_ffmpeg("-i", path, "-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-")
    return np.frombuffer(raw, np.int16).astype(np.float64)


def onset(path: Path, rate: int = 8000) -> float:
    """Second at which the sound of path first gets loud."""
    a = np.abs(sound(path, rate))
    assert a.max() > 1000, "no beep in the soundtrack"
    return float(np.argmax(a > 0.3 * a.max())) / rate


def video_md5(path: Path) -> str:
    return run_ffmpeg("-i", path, "-map", "0:v", "-c", "copy", "-f", "md5", "-").decode().strip()


def extracted(tmp_path: Path, video: Path, *args: str) -> Path:
    run = tmp_path / "run"
    assert cli("extract", video, "-o", run, *args) == 0
    return run


def make_dreams(run: Path, size: tuple[int, int], paint) -> None:
    """A dreams/ folder by hand: paint(frame image) -> dream image, resized to size."""
    (run / "dreams").mkdir(exist_ok=True)
    for frame in sorted((run / "frames").glob("*.png")):
        with Image.open(frame) as im:
            paint(im.convert("RGB")).resize(size).save(run / "dreams" / frame.name)


# -- clips ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def beep_clip(clip_dir: Path) -> Path:
    return make_clip(clip_dir / "beep.mp4", GREY, BEEP, args=(*X264, "-g", "5", "-c:a", "aac"))


@pytest.fixture(scope="session")
def grey_clip(clip_dir: Path) -> Path:
    return make_clip(clip_dir / "grey-silent.mp4", GREY, args=X264)


@pytest.fixture(scope="session")
def colours_clip(clip_dir: Path) -> Path:
    """Red for a second, then blue, then lime (pure green)."""
    return make_clip(
        clip_dir / "colours.mp4",
        "color=red:size=64x48:rate=10:duration=1[a];color=blue:size=64x48:rate=10:duration=1[b];"
        "color=lime:size=64x48:rate=10:duration=1[c];[a][b][c]concat=n=3[out0]",
        args=X264,
    )


@pytest.fixture(scope="session")
def long_sine(clip_dir: Path) -> Path:
    return make_clip(
        clip_dir / "sine60.m4a", "sine=frequency=330:duration=60", args=("-c:a", "aac")
    )


@pytest.fixture(scope="session")
def shapes(clip_dir: Path, av_clip: Path) -> dict[str, Path]:
    """Awkward sources for durations and sizes."""
    d = clip_dir / "shapes"
    d.mkdir()
    out = {
        "av": av_clip,
        "odd": make_clip(
            d / "odd.mp4",
            "testsrc2=size=320x240:rate=25:duration=1.5",
            args=("-vf", "scale=321:241,setsar=1,format=yuv444p", "-c:v", "libx264"),
        ),
        "wide-pixels": make_clip(
            d / "sar.mp4", "testsrc2=size=160x120:rate=25:duration=1.2,setsar=2/1", args=X264
        ),
        "short": make_clip(d / "short.mp4", "testsrc2=size=64x48:rate=25:duration=0.4", args=X264),
        "ntsc": make_clip(
            d / "ntsc.mp4",
            "testsrc2=size=64x48:rate=30000/1001:duration=2.3",
            "sine=duration=2.3",
            args=(*X264, "-c:a", "aac", "-shortest"),
        ),
        "surround": make_clip(
            d / "surround.mp4",
            "testsrc2=size=64x48:rate=10:duration=2",
            "sine=frequency=440:duration=2,aformat=channel_layouts=5.1",
            args=(*X264, "-c:a", "aac"),
        ),
        "ten-bit": make_clip(
            d / "ten.mp4",
            "testsrc2=size=64x48:rate=10:duration=1.5",
            args=("-c:v", "libx264", "-pix_fmt", "yuv420p10le"),
        ),
    }
    upright = make_clip(d / "upright.mp4", "testsrc2=size=96x64:rate=10:duration=1.5", args=X264)
    out["rotated"] = d / "rotated.mp4"
    run_ffmpeg("-display_rotation", "90", "-i", upright, "-c", "copy", out["rotated"])
    out["late"] = d / "late.mp4"
    run_ffmpeg("-itsoffset", "0.5", "-i", upright, "-f", "lavfi", "-i", "sine=duration=2",
               "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", out["late"])
    return out


# -- durations and sizes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["av", "odd", "wide-pixels", "short", "ntsc", "surround", "ten-bit", "rotated", "late"]
)
@pytest.mark.parametrize("fps", ["1", "3"])
def test_duration_size_and_aspect(
    shapes: dict[str, Path], tmp_path: Path, name: str, fps: str
) -> None:
    src = media.probe(shapes[name])
    run = extracted(tmp_path, shapes[name], "--fps", fps)
    assert cli("assemble", run, "--from", "frames") == 0
    out = media.probe(run / "dream.mp4")
    # ffmpeg -i prints durations to 1/100 s.
    assert abs(out.duration - src.duration) <= 1 / OUT_FPS + 0.011, (out.duration, src.duration)
    assert out.width % 2 == 0 and out.height % 2 == 0
    assert out.sar == 1.0 and out.rotation == 0
    sw, sh = src.display_size
    assert abs(out.width - sw) <= 1 and abs(out.height - sh) <= 1
    assert out.width / out.height == pytest.approx(sw / sh, rel=0.01)
    assert out.has_audio == src.has_audio
    assert out.fps == OUT_FPS


def test_rotated_output_is_portrait(shapes: dict[str, Path], tmp_path: Path) -> None:
    run = extracted(tmp_path, shapes["rotated"])
    assert cli("assemble", run, "--from", "frames") == 0
    out = media.probe(run / "dream.mp4")
    assert (out.width, out.height) == (64, 96)


def test_surround_sound_is_kept(shapes: dict[str, Path], tmp_path: Path) -> None:
    run = extracted(tmp_path, shapes["surround"])
    assert cli("assemble", run, "--from", "frames") == 0
    assert "5.1" in next(line for line in info(run / "dream.mp4").splitlines() if "Audio:" in line)


def test_each_image_is_held_until_the_next_one(colours_clip: Path, tmp_path: Path) -> None:
    run = extracted(tmp_path, colours_clip, "--fps", "2")
    assert cli("assemble", run, "--from", "frames", "--out-fps", "10") == 0
    frames = decode(run / "dream.mp4")
    assert len(frames) == 30
    mid = frames[:, 24, 32].astype(int)
    want = [(255, 0, 0)] * 10 + [(0, 0, 255)] * 10 + [(0, 255, 0)] * 10
    assert np.abs(mid - np.array(want)).max() <= 6


@pytest.mark.parametrize("size", [(1344, 768), (768, 1344), (640, 480)])
def test_dreams_of_another_size_are_scaled_and_centre_cropped(
    av_clip: Path, tmp_path: Path, size: tuple[int, int]
) -> None:
    run = extracted(tmp_path, av_clip)
    w, h = size

    def paint(frame: Image.Image) -> Image.Image:
        # Green in the middle, red bands that a 4:3 centre crop cuts off entirely (left and right
        # of a wide dream, top and bottom of a tall one); a stretched dream would keep them.
        dream = Image.new("RGB", size, (255, 0, 0))
        if w / h > 4 / 3:
            keep = round(h * 4 / 3)
            dream.paste((0, 255, 0), ((w - keep) // 2 + 8, 0, (w + keep) // 2 - 8, h))
        elif w / h < 4 / 3:
            keep = round(w * 3 / 4)
            dream.paste((0, 255, 0), (0, (h - keep) // 2 + 8, w, (h + keep) // 2 - 8))
        else:
            dream.paste((0, 255, 0), (16, 16, w - 16, h - 16))
        return dream

    make_dreams(run, size, paint)
    assert cli("assemble", run) == 0
    out = media.probe(run / "dream.mp4")
    assert (out.width, out.height) == (320, 240)
    frame = decode(run / "dream.mp4")[0].astype(int)
    inner = frame[12:-12, 12:-12]  # clear of the chroma bleeding at the edges of the green
    assert np.abs(inner - np.array([0, 255, 0])).max() <= 40
    if w / h != 4 / 3:
        assert np.abs(frame - np.array([0, 255, 0])).mean() < 8  # no red band survives


# -- sound ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["0", "1.0", "0.75"])
def test_audio_auto_is_in_sync(beep_clip: Path, tmp_path: Path, start: str) -> None:
    run = extracted(tmp_path, beep_clip, "--start", start, "--fps", "2")
    assert cli("assemble", run, "--from", "frames") == 0
    out = run / "dream.mp4"
    assert onset(out) == pytest.approx(1.5 - float(start), abs=0.025)
    duration = media.probe(out).duration
    assert duration == pytest.approx(3.0 - float(start), abs=1 / OUT_FPS + 0.011)
    assert len(sound(out)) / 8000 <= duration + 0.03  # the sound ends with the picture


def test_audio_none_is_silent(beep_clip: Path, tmp_path: Path) -> None:
    run = extracted(tmp_path, beep_clip)
    assert cli("assemble", run, "--from", "frames", "--audio", "none") == 0
    out = media.probe(run / "dream.mp4")
    assert not out.has_audio
    assert out.duration == pytest.approx(3.0, abs=0.04)


def test_audio_from_a_longer_file_is_cut_to_the_picture(
    grey_clip: Path, long_sine: Path, tmp_path: Path
) -> None:
    run = extracted(tmp_path, grey_clip, "--start", "0.5", "--end", "2.5")
    assert cli("assemble", run, "--from", "frames", "--audio", long_sine) == 0
    out = media.probe(run / "dream.mp4")
    assert out.has_audio
    assert out.duration <= 2.0 + 1 / OUT_FPS + 0.011
    assert len(sound(run / "dream.mp4")) / 8000 <= 2.0 + 0.05


def test_mux_audio_replaces_the_sound_without_reencoding(
    beep_clip: Path, long_sine: Path, tmp_path: Path
) -> None:
    run = extracted(tmp_path, beep_clip, "--fps", "2")
    assert cli("assemble", run, "--from", "frames", "--audio", "none") == 0
    video = run / "dream.mp4"
    before = video_md5(video)
    duration = media.probe(video).duration
    assert cli("mux-audio", run, long_sine) == 0
    out = media.probe(video)
    assert out.has_audio
    assert video_md5(video) == before
    assert out.duration <= duration + 0.05
    # And back to the source's own soundtrack, still in sync.
    assert cli("mux-audio", run, beep_clip) == 0
    assert video_md5(video) == before
    assert onset(video) == pytest.approx(1.5, abs=0.025)
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]


def test_mux_audio_failure_leaves_the_video_alone(
    beep_clip: Path, grey_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = extracted(tmp_path, beep_clip)
    assert cli("assemble", run, "--from", "frames") == 0
    before = (run / "dream.mp4").read_bytes()
    capsys.readouterr()
    assert cli("mux-audio", run, grey_clip) == 1
    err = capsys.readouterr().err
    assert err.startswith("video2dream: error:") and "no audio" in err
    assert (run / "dream.mp4").read_bytes() == before
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]


# -- transitions, side by side, missing dreams ---------------------------------------------------


def test_crossfade_blends_and_cut_does_not(colours_clip: Path, tmp_path: Path) -> None:
    run = extracted(tmp_path, colours_clip)
    assert (
        cli("assemble", run, "--from", "frames", "--out-fps", "10", "--transition", "crossfade")
        == 0
    )
    mid = decode(run / "dream.mp4")[:, 24, 32].astype(int)
    assert len(mid) == 30
    assert np.abs(mid[0] - (255, 0, 0)).max() <= 6
    assert np.abs(mid[5] - (128, 0, 128)).max() <= 20  # half way from red to blue
    assert np.abs(mid[10] - (0, 0, 255)).max() <= 6
    assert np.abs(mid[15] - (0, 128, 128)).max() <= 20  # half way from blue to lime
    assert np.abs(mid[25] - (0, 255, 0)).max() <= 6
    assert len({tuple(c // 16) for c in mid[:10]}) >= 8  # a steady fade, not a jump

    assert cli("assemble", run, "--from", "frames", "--out-fps", "10", "--transition", "cut") == 0
    mid = decode(run / "dream.mp4")[:, 24, 32].astype(int)
    assert np.abs(mid[9] - (255, 0, 0)).max() <= 6
    assert np.abs(mid[10] - (0, 0, 255)).max() <= 6


def test_side_by_side_is_double_width(colours_clip: Path, tmp_path: Path) -> None:
    run = extracted(tmp_path, colours_clip)
    make_dreams(run, (128, 96), lambda im: Image.new("RGB", im.size, (255, 255, 255)))
    assert cli("assemble", run, "--side-by-side") == 0
    sbs = run / "dream_side_by_side.mp4"
    single, double = media.probe(run / "dream.mp4"), media.probe(sbs)
    assert (double.width, double.height) == (2 * single.width, single.height) == (128, 48)
    assert double.duration == pytest.approx(single.duration, abs=0.02)
    first = decode(sbs)[0].astype(int)
    assert np.abs(first[24, 16] - (255, 0, 0)).max() <= 6  # frames on the left
    assert np.abs(first[24, 100] - (255, 255, 255)).max() <= 6  # dreams on the right


def test_missing_dreams_are_named(
    colours_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = extracted(tmp_path, colours_clip, "--fps", "2")  # 6 frames
    make_dreams(run, (64, 48), lambda im: im)
    for name in ("000002.png", "000005.png"):
        (run / "dreams" / name).unlink()
    capsys.readouterr()
    assert cli("assemble", run) == 1
    err = capsys.readouterr().err
    assert err.startswith("video2dream: error:")
    assert "000002.png" in err and "000005.png" in err and "000001.png" not in err
    assert not (run / "dream.mp4").exists()


def test_rerun_is_up_to_date_until_a_dream_changes(
    colours_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = extracted(tmp_path, colours_clip)
    make_dreams(run, (64, 48), lambda im: im)
    assert cli("assemble", run) == 0
    mtime = (run / "dream.mp4").stat().st_mtime_ns
    capsys.readouterr()
    assert cli("assemble", run) == 0
    assert "up to date" in capsys.readouterr().err
    assert (run / "dream.mp4").stat().st_mtime_ns == mtime
    Image.new("RGB", (64, 48), (255, 255, 255)).save(run / "dreams" / "000002.png")
    assert cli("assemble", run) == 0
    mid = decode(run / "dream.mp4")[:, 24, 32].astype(int)
    assert np.abs(mid[45] - (255, 255, 255)).max() <= 6


# -- real sample videos --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["in1.mp4", "milk.mkv", "car-detection.mp4", "bottle-detection.mp4"]
)
def test_samples_extract_and_assemble(samples: Path, tmp_path: Path, name: str) -> None:
    video = samples / name
    src = media.probe(video)
    run = extracted(tmp_path, video)
    frames = sorted((run / "frames").glob("*.png"))
    # One frame per second of the file; one fewer when the picture stops short of the last second.
    assert len(frames) in (math.ceil(src.duration) - 1, math.ceil(src.duration))
    with Image.open(frames[0]) as im:
        assert im.size == src.display_size
    out_fps = 10
    assert cli("assemble", run, "--from", "frames", "--out-fps", str(out_fps)) == 0
    out = media.probe(run / "dream.mp4")
    assert abs(out.duration - src.duration) <= 1 / out_fps + 0.011
    assert (out.width, out.height) == (src.display_size[0] // 2 * 2, src.display_size[1] // 2 * 2)
    assert out.has_audio == src.has_audio
    shutil.rmtree(run)
