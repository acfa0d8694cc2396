"""What status, extract and assemble may call current or good (issue 19): a video of stale dreams, a
damaged source, a source changed past its first MiB, a dream that does not decode, a killed mux-audio.

Fast: no models. Dreams are written by hand with the keys generate would give them.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from conftest import cli, make_clip, one_line_error, png_chunks, png_from_chunks, snapshot
from PIL import Image

from video2dream.pngmeta import png_decodes, png_intact

X264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")


def err_of(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err




def bad_filter_byte(png: Path, row: int) -> None:
    """Give one row of png the filter type 7 (there are 0-4), every checksum and size still right."""
    chunks = png_chunks(png.read_bytes())
    width, height = struct.unpack(">II", chunks[0][1][:8])
    raw = bytearray(zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT")))
    raw[row * (len(raw) // height)] = 7
    kept = [c for c in chunks if c[0] != b"IDAT"]
    png.write_bytes(png_from_chunks([kept[0], (b"IDAT", zlib.compress(bytes(raw))), *kept[1:]]))


# -- a dream that does not decode ------------------------------------------------------------------


def test_a_png_with_a_bad_filter_byte_does_not_decode(tmp_path: Path) -> None:
    png = tmp_path / "d.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(png)
    assert png_decodes(png)
    bad_filter_byte(png, 17)
    assert png_intact(png)  # checksums right, and it inflates to the right size ...
    assert not png_decodes(png)  # ... but a decoder refuses row 17
    with pytest.raises(OSError), Image.open(png) as im:
        im.load()


# -- a video is current only if its pictures are ---------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s, 64x48, with sound: 3 frames at 1 fps."""
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", "testsrc2=size=64x48:rate=10:duration=3",
                     "sine=frequency=440:duration=3", args=(*X264, "-c:a", "aac", "-shortest"))


def painted(tmp_path: Path, clip: Path) -> Path:
    """extract --preset tiny, prompts.csv by hand and the dreams generate would paint (white
    pictures carrying the keys generate gives them): everything current, no model loaded."""
    from video2dream.pngmeta import save_png
    from video2dream.runfolder import RunFolder
    from video2dream.settings import resolve
    from video2dream.stages import generate as gen
    from video2dream.tables import read_frames

    run = tmp_path / "run"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    names = read_frames(run / "frames.csv")["filename"].tolist()
    times = read_frames(run / "frames.csv")["time"].tolist()
    rows = "".join(f"{n},{t},a fox number {k},\n" for k, (n, t) in enumerate(zip(names, times, strict=True)))
    (run / "prompts.csv").write_text("filename,time,prompt,negative_prompt\n" + rows, encoding="utf-8")
    folder = RunFolder(run)
    for job in gen.plan(folder, resolve(folder.saved_settings()))[0]:
        save_png(Image.new("RGB", (64, 48), "white"), run / "dreams" / job.name, "a fox", {gen.KEY_CHUNK: job.key})
    return run


def status(capsys: pytest.CaptureFixture[str], run: Path, *flags: str) -> str:
    capsys.readouterr()
    assert cli("status", run, *flags) == 0
    return capsys.readouterr().out


def set_guidance(run: Path, value: float) -> None:
    import yaml

    data = yaml.safe_load((run / "settings.yaml").read_text(encoding="utf-8"))
    data["generate"]["guidance"] = value
    (run / "settings.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_a_video_of_stale_dreams_is_stale_and_assemble_says_so(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = painted(tmp_path, clip)
    assert cli("assemble", run) == 0
    assert "warning" not in err_of(capsys)
    assert "assemble    " in (text := status(capsys, run)) and ": current" in text, text

    set_guidance(run, 9.5)  # every dream is now stale: the video of them is too
    text = status(capsys, run)
    gen_line = next(line for line in text.splitlines() if line.startswith("generate"))
    assert "3 stale" in gen_line and f"`video2dream generate {run}`" in gen_line, text
    video = next(line for line in text.splitlines() if line.startswith("assemble"))
    assert "STALE" in video and video.index("video2dream generate") < video.index("video2dream assemble"), video
    d = json.loads(status(capsys, run, "--json"))
    assert d["generate"]["command"] == f"video2dream generate {run}"
    assert (d["videos"][0]["state"], d["videos"][0]["command"]) == ("stale", f"video2dream generate {run}")

    # --strict refuses (and writes nothing); a plain assemble warns with the count, and is not current.
    before = snapshot(run)
    one_line_error(cli("assemble", run, "--strict", "--force"), err_of(capsys), "3 of the 3", "stale",
                   "video2dream generate")
    assert snapshot(run) == before
    assert cli("assemble", run, "--force") == 0
    assert "warning: 3 of the 3 pictures in this video are stale" in err_of(capsys)
    d = json.loads(status(capsys, run, "--json"))
    assert d["videos"][0]["state"] == "stale" and d["videos"][0]["stale_pictures"] == 3
    assert cli("assemble", run) == 0  # up to date as an encode, still said to be of stale dreams
    assert "3 of the 3 pictures" in err_of(capsys)

    set_guidance(run, 5.0)  # the tiny preset's own value again: dreams and video current once more
    d = json.loads(status(capsys, run, "--json"))
    assert d["generate"]["state"] == "current" and "command" not in d["generate"]


def test_a_dream_with_bad_filter_bytes_is_not_assembled(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = painted(tmp_path, clip)
    bad_filter_byte(run / "dreams" / "000002.png", 5)
    before = snapshot(run)
    err_of(capsys)
    one_line_error(cli("assemble", run), err_of(capsys), "000002.png", "not a readable image")
    assert snapshot(run) == before
    assert '"000002.png"' in status(capsys, run, "--json")  # named stale: generate paints it again


def test_status_counts_each_kind_of_keyframe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1 tick, 6 beats and 1 cut (frames.csv's kinds, as --at beats --scene-cuts writes them; put
    there by hand, so that no beat tracker is loaded) are not '8 frames on the beats'."""
    from video2dream.runfolder import RunFolder

    video = make_clip(tmp_path / "eight.mp4", "testsrc2=size=64x48:rate=10:duration=8", args=X264)
    run = tmp_path / "run"
    assert cli("extract", video, "-o", run) == 0
    lines = (run / "frames.csv").read_text(encoding="utf-8").splitlines()
    kinds = ["tick"] + ["beat"] * 3 + ["cut"] + ["beat"] * 3
    (run / "frames.csv").write_text("\n".join([lines[0]] + [ln.rsplit(",", 1)[0] + "," + k for ln, k in
                                                            zip(lines[1:], kinds, strict=True)]) + "\n")
    folder = RunFolder(run)
    folder.write_record("extract", {**folder.read_record("extract"), "at": "beats", "cuts": 1})
    assert "extract     8 frames: 1 at 1.0 fps, 6 on the beats and 1 at shot cuts, 64x48" in status(capsys, run)
    assert json.loads(status(capsys, run, "--json"))["extract"]["kinds"] == {"tick": 1, "beat": 6, "cut": 1}


# -- a source changed past its first MiB -----------------------------------------------------------


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video of 2-4 MB (lossless noise), with sound: more than its first and last MiB."""
    path = make_clip(tmp_path_factory.mktemp("big") / "big.mp4",
                     "nullsrc=size=256x192:rate=10:duration=4,geq=random(1)*255:128:128",
                     "sine=frequency=440:duration=4", args=("-c:v", "libx264", "-qp", "0", "-c:a", "aac", "-shortest"))
    assert (2 << 20) + 200_000 < path.stat().st_size < 4e6, path.stat().st_size
    return path


def test_a_source_changed_past_its_first_mib_is_noticed(
    big_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    video = tmp_path / "clip.mp4"
    shutil.copy(big_clip, video)
    run = tmp_path / "run"
    assert cli("extract", video, "-o", run) == 0
    assert "CHANGED" not in status(capsys, run)
    with open(video, "r+b") as f:  # 64 KiB overwritten, the size unchanged
        f.seek((1 << 20) + 50_000)
        f.write(bytes(range(256)) * 256)
    assert "CHANGED since extract" in status(capsys, run)
    one_line_error(cli("extract", video, "-o", run), err_of(capsys), "has changed since it was extracted")
    one_line_error(cli("assemble", run, "--from", "frames"), err_of(capsys), "has changed since it was extracted")


def test_a_record_with_the_old_fingerprint_stays_current_and_is_upgraded(
    big_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from video2dream.runfolder import RunFolder

    run = tmp_path / "run"
    assert cli("extract", big_clip, "-o", run) == 0
    folder = RunFolder(run)
    src = folder.read_record("source")
    folder.write_record("source", {k: v for k, v in src.items() if k != "content"})  # as before this change
    frames = snapshot(run / "frames")
    assert ", CHANGED" not in status(capsys, run)
    assert cli("extract", big_clip, "-o", run) == 0
    assert "up to date" in err_of(capsys)
    assert snapshot(run / "frames") == frames
    assert folder.read_record("source")["content"] == src["content"]


# -- a broken source -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 5 s mp4 with its index at the start (+faststart), cut at 55%; and one with 20 KB of random
    bytes written into the middle of its stream."""
    import random

    d = tmp_path_factory.mktemp("broken")
    good = make_clip(d / "good.mp4", "testsrc2=size=160x120:rate=10:duration=5",
                     args=(*X264, "-g", "10", "-movflags", "+faststart"))
    data = good.read_bytes()
    (d / "cut.mp4").write_bytes(data[:len(data) * 55 // 100])
    noisy = bytearray(data)
    at = len(data) // 2 - 10_000
    noisy[at:at + 20_480] = random.Random(19).randbytes(20_480)
    (d / "noise.mp4").write_bytes(bytes(noisy))
    return {"good": good, "cut": d / "cut.mp4", "noise": d / "noise.mp4"}


@pytest.mark.parametrize("name", ["cut", "noise"])
def test_a_damaged_source_is_one_clear_line_and_the_old_frames_stay(
    broken: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    run = tmp_path / "run"
    assert cli("extract", broken["good"], "-o", run, "--fps", "2") == 0
    before = snapshot(run)
    err_of(capsys)
    one_line_error(cli("extract", broken[name], "-o", run, "--force"), err_of(capsys), "is damaged", "--allow-damaged",
                   " s")
    assert snapshot(run) == before  # nothing swapped in


@pytest.mark.parametrize("name", ["cut", "noise"])
def test_allow_damaged_extracts_with_a_warning_naming_the_seconds(
    broken: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    import re

    run = tmp_path / "run"
    err_of(capsys)
    assert cli("extract", broken[name], "-o", run, "--allow-damaged") == 0
    err = err_of(capsys)
    warning = next(line for line in err.splitlines() if "warning" in line)
    assert "is damaged" in warning and re.search(r"\d\.\d\d(-\d\.\d\d)? s", warning), err
    assert "damaged source" in status(capsys, run)


# -- a mux-audio killed between the file and the record --------------------------------------------


def killed_mux(run: Path, song: Path, after_file: bool) -> None:
    """`mux-audio RUN song` in its own process, SIGKILLed right after dream.mp4 is replaced (or
    right before), i.e. before (or long before) its records are written."""
    import os
    import subprocess
    import sys

    code = (
        "import os, signal, sys\n"
        "from video2dream.stages import assemble\n"
        "real = assemble._mux\n"
        "def mux(run, video, source):\n"
        f"    if {after_file}: real(run, video, source)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "assemble._mux = mux\n"
        "from video2dream.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-c", code, "mux-audio", str(run), str(song)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr


def test_a_mux_audio_killed_after_the_file_is_finished_by_the_next_command(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    run = painted(tmp_path, clip)
    song = make_clip(tmp_path / "song.wav", "sine=frequency=330:duration=5")
    assert cli("assemble", run) == 0
    killed_mux(run, song, after_file=True)
    video = next(line for line in status(capsys, run).splitlines() if line.startswith("assemble"))
    assert "current" not in video and "stopped part way" in video, video  # never "current, sound from the source"

    encoded = (run / "dream.mp4").stat().st_mtime_ns
    err_of(capsys)
    assert cli("assemble", run) == 0  # settles it: the records catch up with the file, no encode
    assert "finished it" in err_of(capsys)
    assert (run / "dream.mp4").stat().st_mtime_ns == encoded
    assert yaml.safe_load((run / "settings.yaml").read_text())["assemble"]["audio"] == str(song)
    d = json.loads(status(capsys, run, "--json"))["videos"][0]
    assert d["state"] == "current" and "song.wav" in d["sound"], d
    assert not (run / ".video2dream" / "mux-pending.json").exists()


def test_a_mux_audio_killed_before_the_file_changed_nothing(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = painted(tmp_path, clip)
    song = make_clip(tmp_path / "song.wav", "sine=frequency=330:duration=5")
    assert cli("assemble", run) == 0
    killed_mux(run, song, after_file=False)
    assert cli("assemble", run) == 0
    assert "before it changed a video" in err_of(capsys)
    d = json.loads(status(capsys, run, "--json"))["videos"][0]
    assert d["state"] == "current" and "the source" in d["sound"], d
