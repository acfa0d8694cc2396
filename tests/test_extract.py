"""extract: the right frame at each sample time, on awkward inputs; reruns that skip or redo."""

from __future__ import annotations

import csv
import hashlib
import math
import subprocess
from pathlib import Path

import pytest
from conftest import cli, ffmpeg, make_clip
from conftest import run_ffmpeg as ffmpeg_run
from PIL import Image

from video2dream.stages.extract import sample_times

# A 3 s clip at 10 fps whose frame N is solid grey N*8 (so a pixel tells which frame was taken),
# with a keyframe every 0.5 s so that seeking with --start has to land on a keyframe and decode on.
GREY = "color=black:size=64x48:rate=10:duration=3,format=rgb24,geq=r='N*8':g='N*8':b='N*8'"
X264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def rows(run: Path) -> list[tuple[str, float]]:
    with open(run / "frames.csv", encoding="utf-8") as f:
        return [(r["filename"], float(r["time"])) for r in csv.DictReader(f)]


def pixel(path: Path, x: int = 5, y: int = 5) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel((x, y))


def grey_frame_number(path: Path) -> float:
    """Which frame of a GREY clip this image is (fractional when the codec blurred the level)."""
    return pixel(path)[0] / 8


def nearest(colour: tuple[int, int, int], palette: dict[str, tuple[int, int, int]]) -> str:
    return min(
        palette,
        key=lambda name: sum((a - b) ** 2 for a, b in zip(colour, palette[name], strict=True)),
    )


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


# -- clips ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def grey_clip(clip_dir: Path) -> Path:
    return make_clip(clip_dir / "grey.mp4", GREY, args=(*X264, "-g", "5"))


@pytest.fixture(scope="session")
def vfr_clip(clip_dir: Path) -> Path:
    """Variable frame rate: red 0-0.4 s, green to 1.6 s, blue to 1.8 s, white to the end (2.6 s)."""
    spans = [("red", RED, 0.4), ("green", GREEN, 1.2), ("blue", BLUE, 0.2), ("white", WHITE, 0.8)]
    lines = ["ffconcat version 1.0"]
    for name, colour, duration in spans:
        Image.new("RGB", (64, 48), colour).save(clip_dir / f"vfr-{name}.png")
        lines += [f"file vfr-{name}.png", f"duration {duration}"]
    lines.append("file vfr-white.png")
    script = clip_dir / "vfr.ffconcat"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = clip_dir / "vfr.mp4"
    ffmpeg_run("-f", "concat", "-i", script, "-fps_mode", "vfr", *X264, out)
    return out


@pytest.fixture(scope="session")
def late_clip(clip_dir: Path, grey_clip: Path) -> Path:
    """The GREY picture starting 0.5 s after its soundtrack (3.5 s of sine from 0)."""
    out = clip_dir / "late.mp4"
    ffmpeg_run("-itsoffset", "0.5", "-i", grey_clip, "-f", "lavfi", "-i", "sine=duration=3.5",
               "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", out)
    return out


@pytest.fixture(scope="session")
def top_bottom_clip(clip_dir: Path) -> Path:
    """64x48, red top half, blue bottom half."""
    return make_clip(
        clip_dir / "top-bottom.mp4",
        "color=red:size=64x24:rate=10:duration=1[a];color=blue:size=64x24:rate=10:duration=1[b];"
        "[a][b]vstack[out0]",
        args=X264,
    )


@pytest.fixture(scope="session")
def rotated_clip(clip_dir: Path, top_bottom_clip: Path) -> Path:
    """top_bottom_clip, not re-encoded, with display rotation 90 degrees (counter-clockwise)."""
    out = clip_dir / "rotated.mp4"
    ffmpeg_run("-display_rotation", "90", "-i", top_bottom_clip, "-c", "copy", out)
    return out


@pytest.fixture(scope="session")
def wide_pixel_clip(clip_dir: Path) -> Path:
    """160x120 stored, pixels twice as wide as tall (SAR 2:1): red left half, blue right half."""
    return make_clip(
        clip_dir / "sar.mp4",
        "color=red:size=80x120:rate=10:duration=1[a];color=blue:size=80x120:rate=10:duration=1[b];"
        "[a][b]hstack,setsar=2/1[out0]",
        args=X264,
    )


@pytest.fixture(scope="session")
def odd_clip(clip_dir: Path) -> Path:
    return make_clip(
        clip_dir / "odd.mp4",
        "testsrc2=size=320x240:rate=10:duration=1",
        args=("-vf", "scale=321:241,setsar=1,format=yuv444p", "-c:v", "libx264"),
    )


@pytest.fixture(scope="session")
def ten_bit_clip(clip_dir: Path) -> Path:
    return make_clip(
        clip_dir / "grey10.mp4", GREY, args=("-c:v", "libx264", "-pix_fmt", "yuv420p10le")
    )


@pytest.fixture(scope="session")
def full_range_clip(clip_dir: Path) -> Path:
    return make_clip(
        clip_dir / "grey-full.mp4", GREY, args=("-c:v", "libx264", "-pix_fmt", "yuvj420p")
    )


@pytest.fixture(scope="session")
def short_clip(clip_dir: Path) -> Path:
    return make_clip(clip_dir / "short.mp4", "testsrc2=size=64x48:rate=25:duration=0.4", args=X264)


@pytest.fixture(scope="session")
def surround_clip(clip_dir: Path) -> Path:
    return make_clip(
        clip_dir / "surround.mp4",
        "testsrc2=size=64x48:rate=10:duration=2",
        "sine=frequency=440:duration=2,aformat=channel_layouts=5.1",
        args=(*X264, "-c:a", "aac"),
    )


# -- the right frame at each sample time ---------------------------------------------------------


def test_sample_times() -> None:
    assert sample_times(0.0, 3.0, 1.0) == [0.0, 1.0, 2.0]
    assert sample_times(0.0, 3.01, 1.0) == [0.0, 1.0, 2.0, 3.0]
    assert sample_times(1.0, 1.2, 1.0) == [1.0]  # at least one
    assert len(sample_times(0.0, 3.0, 3.0)) == 9


@pytest.mark.parametrize("fps", [1.0, 3.0, 2.5, 7.0, 10.0, 0.4])
def test_frame_on_screen_at_each_sample_time(grey_clip: Path, tmp_path: Path, fps: float) -> None:
    run = tmp_path / "run"
    assert cli("extract", grey_clip, "-o", run, "--fps", fps) == 0
    table = rows(run)
    count = math.ceil(3.0 * fps - 1e-9)
    assert [name for name, _ in table] == [f"{i:06d}.png" for i in range(1, count + 1)]
    for k, (name, time) in enumerate(table):
        assert time == pytest.approx(k / fps, abs=1e-6)
        # The frame a player shows at t: the last one whose timestamp is <= t (N at N/10 s).
        want = math.floor(time * 10 + 1e-6)
        assert grey_frame_number(run / "frames" / name) == pytest.approx(want, abs=0.4), (
            f"at {time} s"
        )


@pytest.mark.parametrize(
    "start, end, fps, times",
    [
        (1.05, None, 3.0, [1.05, 1.05 + 1 / 3, 1.05 + 2 / 3, 2.05, 2.05 + 1 / 3, 2.05 + 2 / 3]),
        (0.99, None, 1.0, [0.99, 1.99, 2.99]),  # frame 9 is on screen, behind the keyframe at 0.5 s
        (2.9, None, 1.0, [2.9]),  # the last frame alone
        (1.0, 2.0, 2.0, [1.0, 1.5]),
        (0.5, 2.25, 4.0, [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]),
        (None, 0.95, 2.0, [0.0, 0.5]),
    ],
)
def test_start_and_end_keep_the_frame_on_screen(
    grey_clip: Path,
    tmp_path: Path,
    start: float | None,
    end: float | None,
    fps: float,
    times: list[float],
) -> None:
    run = tmp_path / "run"
    args: list[str | Path] = ["extract", grey_clip, "-o", run, "--fps", str(fps)]
    if start is not None:
        args += ["--start", str(start)]
    if end is not None:
        args += ["--end", str(end)]
    assert cli(*args) == 0
    table = rows(run)
    assert [t for _, t in table] == pytest.approx(times, abs=1e-6)
    for name, time in table:
        want = math.floor(time * 10 + 1e-6)
        assert grey_frame_number(run / "frames" / name) == pytest.approx(want, abs=0.4), (
            f"at {time} s"
        )


def test_variable_frame_rate(vfr_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", vfr_clip, "-o", run, "--fps", "4") == 0
    table = rows(run)
    assert len(table) == 11  # 0, 0.25, ... 2.5 (the clip lasts 2.6 s give or take its last frame)
    palette = {"red": RED, "green": GREEN, "blue": BLUE, "white": WHITE}
    for name, time in table:
        want = "red" if time < 0.4 else "green" if time < 1.6 else "blue" if time < 1.8 else "white"
        assert nearest(pixel(run / "frames" / name), palette) == want, f"at {time} s"


def test_picture_starting_after_the_sound(late_clip: Path, tmp_path: Path) -> None:
    """Times are seconds of the file (the sound's clock); before the picture, its first frame."""
    run = tmp_path / "run"
    assert cli("extract", late_clip, "-o", run, "--fps", "2") == 0
    table = rows(run)
    assert [t for _, t in table] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    got = [grey_frame_number(run / "frames" / name) for name, _ in table]
    assert got == pytest.approx([0, 0, 5, 10, 15, 20, 25], abs=0.4)


def test_picture_starting_after_the_sound_with_start(late_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", late_clip, "-o", run, "--fps", "1", "--start", "1.25") == 0
    got = [grey_frame_number(run / "frames" / name) for name, _ in rows(run)]
    assert got == pytest.approx([7, 17, 27], abs=0.4)


def test_transport_stream_with_start(grey_clip: Path, tmp_path: Path) -> None:
    """MPEG-TS has no index: seeking may land past a keyframe, so the frames must still be right."""
    ts = tmp_path / "long-gop.ts"
    ffmpeg_run("-f", "lavfi", "-i", GREY, *X264, "-g", "30", ts)  # one keyframe for the whole clip
    run = tmp_path / "run"
    assert cli("extract", ts, "-o", run, "--fps", "1", "--start", "1.0") == 0
    got = [grey_frame_number(run / "frames" / name) for name, _ in rows(run)]
    assert got == pytest.approx([10, 20], abs=0.4)  # not the frame of the seek's landing place


# -- geometry and colour -------------------------------------------------------------------------


def test_rotated_clip_comes_out_upright(rotated_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", rotated_clip, "-o", run) == 0
    frame = run / "frames" / "000001.png"
    assert size_of(frame) == (48, 64)  # width and height swapped
    # 90 degrees counter-clockwise: the red top half is now on the left.
    assert nearest(pixel(frame, 8, 32), {"red": RED, "blue": BLUE}) == "red"
    assert nearest(pixel(frame, 40, 32), {"red": RED, "blue": BLUE}) == "blue"


def test_non_square_pixels_are_widened(wide_pixel_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", wide_pixel_clip, "-o", run) == 0
    frame = run / "frames" / "000001.png"
    assert size_of(frame) == (320, 120)
    assert nearest(pixel(frame, 150, 60), {"red": RED, "blue": BLUE}) == "red"
    assert nearest(pixel(frame, 170, 60), {"red": RED, "blue": BLUE}) == "blue"


def test_odd_size_is_kept(odd_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", odd_clip, "-o", run) == 0
    assert size_of(run / "frames" / "000001.png") == (321, 241)


@pytest.mark.parametrize("clip", ["ten_bit_clip", "full_range_clip"])
def test_colours_of_ten_bit_and_full_range(
    clip: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    video: Path = request.getfixturevalue(clip)
    run = tmp_path / "run"
    assert cli("extract", video, "-o", run, "--fps", "1") == 0
    table = rows(run)
    assert len(table) == 3
    for k, (name, _) in enumerate(table):
        level = k * 80  # frames 0, 10 and 20
        with Image.open(run / "frames" / name) as im:
            assert im.mode == "RGB"
            assert all(abs(c - level) <= 4 for c in im.getpixel((5, 5))), (
                name,
                im.getpixel((5, 5)),
            )


def test_shorter_than_one_second(short_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", short_clip, "-o", run) == 0
    assert [t for _, t in rows(run)] == [0.0]
    assert cli("extract", short_clip, "-o", tmp_path / "run10", "--fps", "10") == 0
    assert [t for _, t in rows(tmp_path / "run10")] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_surround_sound_and_no_sound(surround_clip: Path, grey_clip: Path, tmp_path: Path) -> None:
    assert cli("extract", surround_clip, "-o", tmp_path / "a") == 0
    assert len(rows(tmp_path / "a")) == 2
    assert cli("extract", grey_clip, "-o", tmp_path / "b") == 0
    assert len(rows(tmp_path / "b")) == 3


# -- reruns --------------------------------------------------------------------------------------


def frame_mtimes(run: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((run / "frames").iterdir())}


def test_rerun_skips_and_changed_fps_redoes(
    grey_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert cli("extract", grey_clip, "-o", run) == 0
    before = frame_mtimes(run)
    csv_before = (run / "frames.csv").stat().st_mtime_ns
    capsys.readouterr()
    assert cli("extract", grey_clip, "-o", run) == 0
    assert "up to date" in capsys.readouterr().err
    assert frame_mtimes(run) == before
    assert (run / "frames.csv").stat().st_mtime_ns == csv_before

    assert cli("extract", grey_clip, "-o", run, "--fps", "2") == 0
    assert len(rows(run)) == 6
    assert len(frame_mtimes(run)) == 6
    # The new fps is saved with the run: a plain rerun keeps it, and skips.
    after = frame_mtimes(run)
    assert cli("extract", grey_clip, "-o", run) == 0
    assert frame_mtimes(run) == after
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]


def test_rerun_after_frames_csv_was_broken_extracts_again(grey_clip: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("extract", grey_clip, "-o", run) == 0
    (run / "frames.csv").write_text('filename,time\n"000001.png,0\n', encoding="utf-8")
    assert cli("extract", grey_clip, "-o", run) == 0
    assert len(rows(run)) == 3


def test_another_video_needs_force(
    grey_clip: Path, short_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert cli("extract", grey_clip, "-o", run) == 0
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert cli("extract", short_clip, "-o", run) == 1
    err = capsys.readouterr().err
    assert err.startswith("video2dream: error:") and "--force" in err and "grey.mp4" in err
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before

    assert cli("extract", short_clip, "-o", run, "--force") == 0
    assert len(rows(run)) == 1
    assert size_of(run / "frames" / "000001.png") == (64, 48)
    assert not (run / "frames" / "000002.png").exists()
    assert "short.mp4" in (run / ".video2dream" / "source.json").read_text(encoding="utf-8")


# -- every frame once at the native rate, and the real samples -----------------------------------


def extracted_md5s(run: Path) -> list[str]:
    out = []
    for path in sorted((run / "frames").glob("*.png")):
        with Image.open(path) as im:
            out.append(hashlib.md5(im.tobytes()).hexdigest())
    return out


def source_md5s(video: Path) -> list[str]:
    """MD5 of every decoded frame of video as RGB, in order (what a PNG of it holds)."""
    cmd = [ffmpeg(), "-v", "error", "-i", str(video), "-map", "0:v:0", "-pix_fmt", "rgb24",
           "-f", "framemd5", "-"]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split(",")[-1].strip() for line in text.splitlines() if not line.startswith("#")]


def test_native_rate_takes_every_frame_once(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "ntsc.mp4", "testsrc2=size=64x48:rate=30000/1001:duration=2",
                     args=X264)
    run = tmp_path / "run"
    assert cli("extract", clip, "-o", run, "--fps", str(30000 / 1001)) == 0
    assert extracted_md5s(run) == source_md5s(clip)  # no frame twice, none skipped


@pytest.mark.parametrize(
    "name, args, first, count",
    [
        # Matroska: the picture starts at 0.033 s and timestamps are whole milliseconds.
        pytest.param("milk.mkv", ["--fps", "30"], 0, 51, marks=pytest.mark.slow),  # heavy: CI runs it
        pytest.param("milk.mkv", ["--fps", "30", "--start", "1.0"], 30, 21, marks=pytest.mark.slow),
        ("in1.mp4", ["--fps", str(30000 / 1001)], 0, 209),  # NTSC rate
        ("in1.mp4", ["--fps", str(30000 / 1001), "--start", "3.0"], 89, 120),
        pytest.param("car-detection.mp4", ["--fps", "12.5", "--start", "20", "--end", "22"], 250, 25,
                     marks=pytest.mark.slow),
    ],
)
def test_samples_at_their_own_rate(samples: Path, tmp_path: Path, name: str, args: list[str],
                                   first: int, count: int) -> None:
    """At the source's frame rate, extract gives each frame of the source once, in order."""
    run = tmp_path / "run"
    assert cli("extract", samples / name, "-o", run, *args) == 0
    assert extracted_md5s(run) == source_md5s(samples / name)[first : first + count]


def test_end_past_the_video_is_said(short_clip: Path, tmp_path: Path, capsys) -> None:
    """--end past the end is clamped to the video's end with a one-line warning (not an error)."""
    assert cli("extract", short_clip, "-o", tmp_path / "run", "--end", "60") == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "--end 60 is past the end of short.mp4" in line], err
    assert [t for _, t in rows(tmp_path / "run")] == [0.0]
    assert cli("extract", short_clip, "-o", tmp_path / "within", "--end", "0.3") == 0
    assert "past the end" not in capsys.readouterr().err
