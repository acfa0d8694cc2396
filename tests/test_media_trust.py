"""What reaches ffmpeg, and what assemble, mux-audio and status may trust (issues 9 and 10).

Fast: no models. The frames stand in for dreams (copied into dreams/ or dreams_rNN/ by hand).
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, make_clip, one_line_error, png_chunks, png_from_chunks, run_ffmpeg, snapshot
from PIL import Image

from video2dream import media
from video2dream.pngmeta import png_decodes, png_intact

X264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")
# Silence with a 1 kHz beep from 1.5 s to 1.6 s: quiet at 0.5 s, unlike a steady sine.
BEEP = "aevalsrc='if(between(t,1.5,1.6),sin(2*PI*1000*t),0)':sample_rate=44100:duration=3"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("trust")
    return {
        "red": make_clip(d / "red.mp4", "color=red:size=64x48:rate=10:duration=2", args=X264),
        "blue": make_clip(d / "blue.mp4", "color=blue:size=64x48:rate=10:duration=2", args=X264),
        "beep": make_clip(d / "beep.mp4", "color=gray:size=64x48:rate=10:duration=3", BEEP,
                          args=(*X264, "-c:a", "aac")),
        "song": make_clip(d / "song.wav", "sine=frequency=330:duration=5"),
        # An mp3 with cover art: its only video stream is an attached picture.
        "cover": make_clip(d / "cover.mp3", "sine=duration=4", "color=lime:size=32x32",
                           args=("-map", "0:a", "-map", "1:v", "-frames:v", "1", "-c:a", "libmp3lame",
                                 "-c:v", "mjpeg", "-disposition:v", "attached_pic")),
    }


def err_of(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err



def first_pixel(video: Path) -> np.ndarray:
    p = media.probe(video)
    raw = run_ffmpeg("-i", video, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    return np.frombuffer(raw, np.uint8).reshape(p.height, p.width, 3)[p.height // 2, p.width // 2].astype(int)


def loud_at(video: Path, second: float) -> bool:
    raw = run_ffmpeg("-i", video, "-map", "0:a:0", "-ac", "1", "-ar", "8000", "-f", "s16le", "-")
    a = np.abs(np.frombuffer(raw, np.int16).astype(float))
    k = int(second * 8000)
    return bool(a[k:k + 800].max() > 1000)


def extracted(run: Path, video: Path) -> Path:
    assert cli("extract", video, "-o", run) == 0
    return run


def dreams_from_frames(run: Path, folder: str = "dreams") -> None:
    shutil.copytree(run / "frames", run / folder, dirs_exist_ok=True)


RED, BLUE = np.array([254, 0, 0]), np.array([0, 0, 254])


# -- 1. paths reach ffmpeg as exactly those files ---------------------------------------------------


def test_odd_names_reach_ffmpeg_as_those_files(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # file:clip.mp4 is red; clip.mp4 (what the file: protocol would open) is blue.
    shutil.copy(clips["red"], "file:clip.mp4")
    shutil.copy(clips["blue"], "clip.mp4")
    # A run folder named like an image2 number pattern, and blue decoys where the pattern points.
    for decoy in ("-x0", "-x1"):
        assert cli("extract", "clip.mp4", f"--output={decoy}") == 0
    assert cli("extract", "file:clip.mp4", "--output=-x%d") == 0
    run = tmp_path / "-x%d"
    with Image.open(run / "frames" / "000001.png") as im:
        assert np.abs(np.array(im.convert("RGB"))[24, 32].astype(int) - RED).max() <= 6
    src = json.loads((run / ".video2dream" / "source.json").read_text())
    assert src["path"] == str(tmp_path / "file:clip.mp4")

    dreams_from_frames(run)
    assert cli("assemble", "--", "-x%d") == 0
    assert np.abs(first_pixel(run / "dream.mp4") - RED).max() <= 8
    # An output whose name starts with '-' and holds a '%'.
    assert cli("assemble", "--from", "frames", "--output=-out%d.mp4", "--", "-x%d") == 0
    assert np.abs(first_pixel(tmp_path / "-out%d.mp4") - RED).max() <= 8
    assert not list(tmp_path.glob("-out[0-9]*"))


# -- 2. broken pictures never drop out silently -----------------------------------------------------




def _with_idat(png: Path, idat: bytes) -> None:
    chunks = png_chunks(png.read_bytes())
    first = next(i for i, (k, _) in enumerate(chunks) if k == b"IDAT")
    kept = [c for c in chunks if c[0] != b"IDAT"]
    png.write_bytes(png_from_chunks(kept[:first] + [(b"IDAT", idat)] + kept[first:]))


def _raw(png: Path) -> bytes:
    return zlib.decompress(b"".join(d for k, d in png_chunks(png.read_bytes()) if k == b"IDAT"))


@pytest.mark.parametrize("damage", ["garbage", "short", "long", "unfinished"])
def test_image_data_that_does_not_inflate_is_caught(tmp_path: Path, damage: str) -> None:
    png = tmp_path / "d.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(png)
    assert png_decodes(png)
    raw = _raw(png)
    idat = {"garbage": b"\x78\x9c" + bytes(range(60)), "short": zlib.compress(raw[:-31]),
            "long": zlib.compress(raw + b"\0" * 31), "unfinished": zlib.compress(raw)[:-6]}[damage]
    _with_idat(png, idat)
    assert png_intact(png)  # every checksum is right ...
    assert not png_decodes(png)  # ... but the pixels are not there


def test_an_interlaced_png_decodes(tmp_path: Path) -> None:
    """Adam7: seven sub-images, each row a filter byte and its pixels."""
    w, h = 13, 7
    pixels = np.arange(w * h * 3, dtype=np.uint8).reshape(h, w, 3)
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b"".join(b"\0" + pixels[y, x::dx].tobytes() for x, y0, dx, dy in passes for y in range(y0, h, dy)
                   if x < w)
    png = tmp_path / "i.png"
    png.write_bytes(png_from_chunks([(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)),
                          (b"IDAT", zlib.compress(raw)), (b"IEND", b"")]))
    with Image.open(png) as im:
        assert np.array_equal(np.array(im), pixels)  # the file is right
    assert png_decodes(png)
    png.write_bytes(png_from_chunks([(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),  # not interlaced: too few
                          (b"IDAT", zlib.compress(raw)), (b"IEND", b"")]))
    assert not png_decodes(png)


def test_a_dream_that_does_not_inflate_is_not_current_nor_assembled(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from video2dream.pngmeta import save_png
    from video2dream.stages.generate import KEY_CHUNK, is_current

    dream = tmp_path / "000001.png"
    save_png(Image.new("RGB", (64, 48), "white"), dream, "a prompt", {KEY_CHUNK: "k"})
    assert is_current(dream, "k")
    _with_idat(dream, zlib.compress(_raw(dream)[:-100]))
    assert not is_current(dream, "k")

    run = extracted(tmp_path / "run", clips["red"])
    dreams_from_frames(run)
    bad = run / "dreams" / "000002.png"
    _with_idat(bad, zlib.compress(_raw(bad)[:-100]))
    before = snapshot(run)
    err_of(capsys)
    one_line_error(cli("assemble", run), err_of(capsys), "000002.png", "not a readable image")
    assert snapshot(run) == before


def test_ffmpeg_errors_fail_the_encode(tmp_path: Path) -> None:
    """The last line of defence: a picture ffmpeg cannot decode fails the encode (-xerror) instead of
    leaving a video without it (ffmpeg itself exits 0 there)."""
    from video2dream.errors import UserError
    from video2dream.settings import Settings
    from video2dream.stages.assemble import slideshow

    paths = []
    for k, colour in enumerate(("red", "lime", "blue")):
        paths.append(tmp_path / f"{k}.png")
        Image.new("RGB", (64, 48), colour).save(paths[-1])
    _with_idat(paths[1], b"\x78\x9c" + bytes(range(60)))
    with pytest.raises(UserError, match="ffmpeg could not encode"):
        slideshow(paths, 1.0, 0.0, 64, 48, tmp_path / "show.mp4", Settings(), tmp_path / "show.ffconcat")
    assert not (tmp_path / "show.mp4").exists()


# -- 3. assemble never writes over what the folder is made from -------------------------------------


def test_assemble_refuses_outputs_the_folder_depends_on(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = shutil.copy(clips["beep"], tmp_path / "source.mp4")
    song = shutil.copy(clips["song"], tmp_path / "song.wav")
    run = extracted(tmp_path / "run", video)
    dreams_from_frames(run)
    assert cli("assemble", run) == 0
    (run / "prompts.csv").write_text("filename,prompt\n000001.png,a cat\n", encoding="utf-8")
    before, source = snapshot(run), Path(video).read_bytes()
    for out, extra in [(video, ()), (song, ("--audio", song)), (run / "frames.csv", ()),
                       (run / "prompts.csv", ()), (run / "settings.yaml", ()),
                       (run / "dreams" / "000001.mp4", ()), (run / "frames" / "x.mp4", ()),
                       (run / ".video2dream" / "x.mp4", ()), (tmp_path / "run" / ".." / "source.mp4", ())]:
        err_of(capsys)
        one_line_error(cli("assemble", run, "-o", out, *extra), err_of(capsys), "made from")
    # The side-by-side name of an output is guarded too: x_side_by_side.mp4 would be the source.
    shutil.copy(video, tmp_path / "x_side_by_side.mp4")
    err_of(capsys)
    one_line_error(cli("assemble", run, "-o", tmp_path / "x.mp4", "--side-by-side",
                       "--audio", tmp_path / "x_side_by_side.mp4"), err_of(capsys), "made from")
    assert snapshot(run) == before
    assert Path(video).read_bytes() == source


def test_assemble_after_the_source_changed_refuses_its_sound(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = shutil.copy(clips["beep"], tmp_path / "source.mp4")
    run = extracted(tmp_path / "run", video)
    make_clip(Path(video), "color=gray:size=64x48:rate=10:duration=3", "sine=duration=3",
              args=(*X264, "-c:a", "aac"))  # another take under the same name
    before = snapshot(run)
    err_of(capsys)
    one_line_error(cli("assemble", run, "--from", "frames"), err_of(capsys), "has changed", "--force")
    assert snapshot(run) == before
    assert cli("assemble", run, "--from", "frames", "--audio", "none") == 0  # the way on without its sound
    assert not media.probe(run / "dream.mp4").has_audio


# -- 4. an audio file with cover art is an audio file -----------------------------------------------


def test_an_audio_file_with_cover_art_is_named_and_usable(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err_of(capsys)
    one_line_error(cli("extract", clips["cover"], "-o", tmp_path / "no"), err_of(capsys),
                   "audio file with cover art")
    assert not (tmp_path / "no").exists()
    run = extracted(tmp_path / "run", clips["red"])
    assert cli("assemble", run, "--from", "frames", "--audio", clips["cover"]) == 0
    out = media.probe(run / "dream.mp4")
    assert out.has_audio and (out.width, out.height) == (64, 48)
    assert np.abs(first_pixel(run / "dream.mp4") - RED).max() <= 8  # the cover is not the picture
    assert cli("assemble", run, "--from", "frames", "--audio", "none") == 0
    assert cli("mux-audio", run, clips["cover"]) == 0
    assert media.probe(run / "dream.mp4").has_audio


# -- 5. frames.csv times outside the source ---------------------------------------------------------


def test_a_time_past_the_source_end_is_refused(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = extracted(tmp_path / "run", clips["red"])
    text = (run / "frames.csv").read_text(encoding="utf-8").splitlines()
    text[-1] = text[-1].split(",")[0] + ",100000.0"  # a 28-hour encode
    (run / "frames.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
    before = snapshot(run)
    err_of(capsys)
    one_line_error(cli("assemble", run, "--from", "frames"), err_of(capsys), "000002.png", "100000", "outside")
    assert snapshot(run) == before


# -- 6. the added soundtrack stays --------------------------------------------------------------------


def test_the_soundtrack_added_with_mux_audio_stays(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(clips["song"], "song.wav")
    run = extracted(tmp_path / "run", clips["beep"])
    dreams_from_frames(run)
    assert cli("assemble", run) == 0
    assert not loud_at(run / "dream.mp4", 0.5)  # the source: quiet until its beep
    assert cli("mux-audio", run, "song.wav") == 0
    assert loud_at(run / "dream.mp4", 0.5)
    err_of(capsys)
    assert cli("assemble", run) == 0
    err = err_of(capsys)
    assert "up to date" in err and "song.wav" in err and "mux-audio" in err, err
    assert cli("status", run) == 0
    out = capsys.readouterr().out
    assert "song.wav" in out and "current" in out, out
    # A re-encode (another crf) keeps the song, from any working directory.
    monkeypatch.chdir(run)
    assert cli("assemble", ".", "--crf", "23") == 0
    err = err_of(capsys)
    assert "wrote" in err and "song.wav" in err, err
    assert loud_at(run / "dream.mp4", 0.5)
    # --audio auto: the source's sound again, and the song forgotten.
    assert cli("assemble", ".", "--audio", "auto") == 0
    assert not loud_at(run / "dream.mp4", 0.5)
    assert cli("assemble", ".", "--crf", "18") == 0
    assert not loud_at(run / "dream.mp4", 0.5)
    err_of(capsys)
    assert cli("status", ".") == 0
    assert "song.wav" not in capsys.readouterr().out


def test_mux_audio_of_the_source_itself_means_auto(clips: dict[str, Path], tmp_path: Path) -> None:
    run = extracted(tmp_path / "run", clips["beep"])
    assert cli("assemble", run, "--from", "frames", "--audio", "none") == 0
    assert cli("mux-audio", run, clips["beep"]) == 0
    assert "audio: auto" in (run / "settings.yaml").read_text(encoding="utf-8")
    assert not (run / ".video2dream" / "soundtrack.json").exists()


# -- 7. one-off outputs ----------------------------------------------------------------------------


def test_a_one_off_output_leaves_the_folders_video_alone(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = extracted(tmp_path / "run", clips["red"])
    dreams_from_frames(run)
    assert cli("assemble", run, "--side-by-side") == 0
    record = run / ".video2dream" / "assemble.json"
    kept = record.read_bytes()
    check = tmp_path / "check.mp4"
    assert cli("assemble", run, "--from", "frames", "-o", check) == 0
    # The remembered --side-by-side does not make a frames | frames check.
    assert media.probe(check).width == 64
    assert not (tmp_path / "check_side_by_side.mp4").exists()
    assert record.read_bytes() == kept
    err_of(capsys)
    assert cli("assemble", run) == 0
    assert "up to date" in err_of(capsys)
    # Asked for together, they are refused.
    one_line_error(cli("assemble", run, "--from", "frames", "--side-by-side"), err_of(capsys), "--from frames")


# -- 8. status --------------------------------------------------------------------------------------


def test_status_says_stale_and_current_from_any_directory(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert cli("extract", clips["red"], "-o", "run") == 0
    run = tmp_path / "a" / "run"
    dreams_from_frames(run)
    dreams_from_frames(run, "dreams_r02")
    assert cli("assemble", "run") == 0
    assert cli("assemble", "run", "--round", "2") == 0
    assert cli("assemble", "run", "--grid") == 0
    assert json.loads((run / ".video2dream" / "assemble.json").read_text())["output"] == "dream.mp4"

    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    assert cli("status", "../a/run") == 0
    out = capsys.readouterr().out
    lines = {line.split()[0] + (line.split()[1] if line.startswith("round") else ""): line
             for line in out.splitlines()}
    assert "dream.mp4" in lines["assemble"] and lines["assemble"].endswith("current"), out
    assert "dream_r02.mp4" in lines["round2"] and lines["round2"].endswith("current"), out
    assert "dream_grid.mp4" in lines["grid"] and lines["grid"].endswith("current"), out

    # Records written before paths were kept relative to the run folder held absolute ones.
    record = run / ".video2dream" / "assemble.json"
    old = json.loads(record.read_text())
    record.write_text(json.dumps({**old, "output": str(run / "dream.mp4")}))
    assert cli("status", "../a/run") == 0
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith("assemble")).endswith("current"), out

    Image.new("RGB", (64, 48), "white").save(run / "dreams" / "000002.png")
    assert cli("status", "../a/run") == 0
    out = capsys.readouterr().out
    assert "STALE" in next(line for line in out.splitlines() if line.startswith("assemble")), out
    assert "STALE" in next(line for line in out.splitlines() if line.startswith("grid")), out
    assert next(line for line in out.splitlines() if line.startswith("round")).endswith("current"), out


def test_status_of_a_missing_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli("status", tmp_path / "nowhere")
    out, err = capsys.readouterr()
    assert out == ""
    one_line_error(code, err, "does not exist")


def test_a_gone_soundtrack_is_one_clear_line(
    clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    song = Path(shutil.copy(clips["song"], tmp_path / "song.wav"))
    run = extracted(tmp_path / "run", clips["beep"])
    assert cli("assemble", run, "--from", "frames") == 0
    assert cli("mux-audio", run, song) == 0
    song.unlink()
    before = snapshot(run)
    err_of(capsys)
    one_line_error(cli("assemble", run, "--from", "frames"), err_of(capsys), "is gone", "--audio auto")
    assert snapshot(run) == before
    assert cli("status", run) == 0
    assert "is gone" in capsys.readouterr().out
    assert cli("assemble", run, "--from", "frames", "--audio", "auto") == 0
