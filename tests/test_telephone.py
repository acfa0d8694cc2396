"""The telephone game with the tiny preset: chains from images (RGB, greyscale, RGBA, ...), the strip,
resume and extend, the fixed-point stop, a folder of images, and a short video for two rounds."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, cli, make_clip, pixels
from PIL import Image

from video2dream import media
from video2dream.cli import EXAMPLES
from video2dream.pngmeta import parse_parameters, read_parameters, read_png_text
from video2dream.strip import MARGIN, make_strip, strip_captions, tile_sizes
from video2dream.telephone import load_image
from video2dream.telephone.steps import CHUNK

pytestmark = pytest.mark.slow


def rows(folder: Path, name: str = "chain.csv") -> list[dict[str, str]]:
    with open(folder / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def duration(path: Path) -> float:
    return media.probe(path).duration


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pictures made here, so that the tests run without ../shared/samples too."""
    d = tmp_path_factory.mktemp("own-images")
    y, x = np.mgrid[0:150, 0:240]
    rgb = np.stack([x % 256, y * 255 // 150, (x + y) % 256], axis=-1).astype(np.uint8)
    out = {"rgb": d / "photo.png", "grey": d / "grey.png", "rgba": d / "alpha.png",
           "palette": d / "palette.gif", "grey16": d / "deep.png", "jpeg": d / "photo.jpg"}
    Image.fromarray(rgb).save(out["rgb"])
    Image.fromarray(rgb).save(out["jpeg"], quality=90)
    Image.fromarray(rgb[..., 1]).save(out["grey"])
    rgba = np.dstack([rgb, np.zeros((150, 240), np.uint8)])
    rgba[40:110, 60:180, 3] = 255  # an opaque box in a transparent field
    Image.fromarray(rgba, "RGBA").save(out["rgba"])
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(out["palette"], transparency=0)
    Image.fromarray((y * 65535 // 150).astype(np.uint16)).save(out["grey16"])
    return out


# -- pictures in: every mode Pillow opens, flattened and fitted --------------------------------------


def test_load_image_modes(own: dict[str, Path]) -> None:
    for name, path in own.items():
        im = load_image(path)
        assert im.mode == "RGB", name
        assert im.size == (240, 150), name
    grey = np.asarray(load_image(own["grey"]))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    flat = np.asarray(load_image(own["rgba"]))
    assert (flat[0, 0] == 255).all(), "transparent pixels are flattened onto white"
    assert (flat[75, 120] == np.asarray(Image.open(own["rgb"]))[75, 120]).all(), "opaque pixels stay"
    deep = np.asarray(load_image(own["grey16"]))
    assert deep[0, 0, 0] == 0 and deep[-1, 0, 0] > 240, "16-bit greyscale is scaled, not clipped"


# -- the strip ------------------------------------------------------------------------------------


def test_strip_size_and_captions(tmp_path: Path) -> None:
    images = [Image.new("RGB", (300, 200), c) for c in ("red", "green", "blue")]
    captions = ["a red square", "a green one " * 12, ""]  # the long one wraps onto several lines
    strip = make_strip(images, captions, ["0", "1", "2"], title="a title", tile_height=100)
    height, widths = tile_sizes(images, 100)
    assert height == 100 and widths == [150, 150, 150]
    assert strip.width == 3 * 150 + 4 * MARGIN
    assert strip.height > 100 + 4 * MARGIN  # title, labels and captions
    from video2dream.strip import save_strip

    save_strip(strip, tmp_path / "s.png")
    assert strip_captions(tmp_path / "s.png") == captions
    # Ink under the tiles that have a caption, and more of it under the long one; none under "".
    a = np.asarray(strip)
    ink = []
    for k, colour in enumerate([(255, 0, 0), (0, 128, 0), (0, 0, 255)]):
        columns = a[:, MARGIN + k * (150 + MARGIN):MARGIN + k * (150 + MARGIN) + 150]
        tile_rows = np.nonzero((columns[:, 75] == colour).all(axis=-1))[0]
        assert len(tile_rows) == 100
        ink.append(int((columns[tile_rows[-1] + 1:].min(axis=-1) < 128).sum()))
    assert ink[1] > ink[0] > 0 and ink[2] == 0


def test_long_chain_strip_stays_viewable() -> None:
    images = [Image.new("RGB", (1024, 1024), "grey")] * 200
    height, widths = tile_sizes(images, 256)
    assert sum(widths) + MARGIN * 201 <= 16384 and height >= 64


# -- a chain from one image -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples_dir() -> Path | None:
    from conftest import SAMPLES

    return SAMPLES if SAMPLES.is_dir() else None


@pytest.mark.parametrize("sample,mode", [("chelsea.png", "RGB"), ("camera.png", "L"), ("logo.png", "RGBA")])
def test_chain_of_three_from_samples(sample: str, mode: str, samples_dir: Path | None, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    if samples_dir is None:
        pytest.skip("../shared/samples is absent")
    source = samples_dir / sample
    with Image.open(source) as im:
        assert im.mode == mode
        src_w, src_h = im.size
        alpha = np.asarray(im.getchannel("A")) if mode == "RGBA" else None
    out = tmp_path / "chain"
    assert cli("telephone", source, "-o", out, "--steps", "3", "--preset", "tiny") == 0
    check_chain(out, 3, src_w / src_h)
    first = pixels(out / "step_000.png")
    if mode == "L":
        assert (first[..., 0] == first[..., 2]).all()
    if alpha is not None:  # (the sample's alpha happens to be opaque: own images test transparency)
        assert first.shape[-1] == 3 and ((first[alpha[:first.shape[0], :first.shape[1]] == 0]) == 255).all()
    assert "3 step(s)" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["rgba"])
def test_chain_from_own_images(which: str, own: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "chain"
    assert cli("telephone", own[which], "-o", out, "--steps", "2", "--preset", "tiny", "--seed", "5") == 0
    check_chain(out, 2, 240 / 150, seed=5)
    if which == "rgba":
        first = pixels(out / "step_000.png")
        assert (first[0, 0] == 255).all(), "the transparent corner is flattened onto white"
        assert not (first[first.shape[0] // 2, first.shape[1] // 2] == 255).all(), "the opaque middle is not"


def check_chain(out: Path, steps: int, aspect: float, seed: int = 0) -> list[dict[str, str]]:
    names = [f"step_{k:03d}.png" for k in range(steps + 1)]
    assert sorted(p.name for p in out.glob("step_*.png")) == names
    table = rows(out)
    assert [int(r["step"]) for r in table] == list(range(steps + 1))
    assert list(table[0]) == ["step", "image", "caption", "prompt", "negative_prompt", "seed",
                              "clip_to_original", "clip_to_previous", "caption_to_previous", "repeats_step"]
    assert float(table[0]["clip_to_original"]) == pytest.approx(1.0, abs=1e-3)
    sizes = set()
    for k, r in enumerate(table):
        with Image.open(out / r["image"]) as im:
            assert im.mode == "RGB"
            sizes.add(im.size)
        if k == 0:
            assert r["prompt"] == "" and r["seed"] == ""
            continue
        # caption mode: each step paints the previous step's caption, with seed + step
        assert r["prompt"] == table[k - 1]["caption"]
        assert int(r["seed"]) == seed + k
        params = parse_parameters(read_parameters(out / r["image"]) or "")
        assert params["prompt"] == r["prompt"].strip() and params["Seed"] == str(seed + k)
        assert params["Telephone step"] == str(k)
        for column in ("clip_to_original", "clip_to_previous", "caption_to_previous"):
            assert -1.0 <= float(r[column]) <= 1.0001
    assert len(sizes) == 1, "every step has the dream size"
    (w, h), = sizes
    assert abs(w / h - aspect) / aspect < 0.25, "the aspect ratio is kept (to SDXL's 64-pixel steps)"
    strip = Image.open(out / "chain_strip.png")
    assert strip_captions(out / "chain_strip.png") == [r["caption"] for r in table]
    height, widths = tile_sizes([Image.new("RGB", (w, h))] * (steps + 1), 256)
    assert strip.width == sum(widths) + MARGIN * (steps + 2)
    assert strip.height > height
    with Image.open(out / "drift.png") as plot:
        assert plot.width > 300
    p = media.probe(out / "chain.mp4")
    assert p.duration == pytest.approx(steps + 1, abs=0.1)  # a second per step
    assert p.width % 2 == 0 and p.height % 2 == 0
    return table


# -- resume, extend, other settings ---------------------------------------------------------------


def test_extend_resume_after_kill_and_refuse_other_settings(own: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chain"
    assert cli("telephone", own["jpeg"], "-o", out, "--steps", "2", "--preset", "tiny") == 0
    before = {n: (out / n).read_bytes() for n in ("step_000.png", "step_001.png", "step_002.png")}
    capsys.readouterr()
    # A larger --steps extends the chain; the preset comes from the folder's saved settings.
    assert cli("telephone", own["jpeg"], "-o", out, "--steps", "4") == 0
    assert "2 step(s) painted" in capsys.readouterr().err
    assert all((out / n).read_bytes() == b for n, b in before.items())
    table = check_chain(out, 4, 240 / 150)
    full = {k: pixels(out / f"step_{k:03d}.png") for k in (3, 4)}

    # Killed after step 2: steps 3 and 4 never written, a half-written temporary left behind.
    for k in (3, 4):
        (out / f"step_{k:03d}.png").unlink()
    (out / "step_003.tmp-0000dead.png").write_bytes(b"\x89PNG half")  # temp_path's form
    assert cli("telephone", own["jpeg"], "-o", out, "--steps", "4") == 0
    assert "2 step(s) painted" in capsys.readouterr().err
    assert not list(out.glob("*.tmp-*"))
    for k in (3, 4):  # the same pictures as the uninterrupted chain
        assert np.array_equal(pixels(out / f"step_{k:03d}.png"), full[k])
    assert rows(out) == table

    # A smaller --steps shows the first steps and keeps the rest for later.
    assert cli("telephone", own["jpeg"], "-o", out, "--steps", "2") == 0
    assert len(rows(out)) == 3 and (out / "step_004.png").is_file()

    # Other settings: refused with what changed, nothing touched; --force starts over.
    snapshot = {p.name: p.read_bytes() for p in out.glob("step_*.png")}
    capsys.readouterr()
    assert cli("telephone", own["jpeg"], "-o", out, "--guidance", "2.5") == 1
    err = capsys.readouterr().err
    assert "guidance" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert cli("telephone", own["rgb"], "-o", out) == 1
    assert "the input image" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.glob("step_*.png")} == snapshot
    assert cli("telephone", own["jpeg"], "-o", out, "--guidance", "2.5", "--steps", "1", "--force") == 0
    assert sorted(p.name for p in out.glob("step_*.png")) == ["step_000.png", "step_001.png"]
    assert parse_parameters(read_parameters(out / "step_001.png") or "")["CFG scale"] == "2.5"


def test_really_killed_chain_resumes(own: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "chain"
    cmd = [sys.executable, "-m", "video2dream", "telephone", str(own["grey"]), "-o", str(out),
           "--steps", "60", "--preset", "tiny", "--steps-per-image", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "step_003.png").is_file():  # step 2 captioned (3 painted)
            assert proc.poll() is None and time.monotonic() < deadline, "the chain did not get going"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    on_disk = sorted(p.name for p in out.glob("step_*.png") if ".tmp-" not in p.name)
    # a step is committed painted, then again captioned: the kill may leave the last one uncaptioned
    uncaptioned = [n for n in on_disk if json.loads(read_png_text(out / n)[CHUNK])["caption"] is None]
    assert uncaptioned in ([], on_disk[-1:])
    finished = [n for n in on_disk if n not in uncaptioned]
    assert 3 <= len(finished) < 61
    last = len(finished) - 1
    kept = {n: (out / n).read_bytes() for n in finished}
    painted = {n: (np.asarray(Image.open(out / n)), read_parameters(out / n)) for n in uncaptioned}
    assert cli("telephone", own["grey"], "-o", out, "--steps", str(last + 2)) == 0
    table = rows(out)
    assert len(table) == last + 3
    assert all((out / n).read_bytes() == b for n, b in kept.items())
    for n, (picture, parameters) in painted.items():  # captioned now, never painted again
        assert (np.asarray(Image.open(out / n)) == picture).all() and read_parameters(out / n) == parameters
    for k in range(1, len(table)):
        assert table[k]["prompt"] == table[k - 1]["caption"]


# -- the fixed point ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parrot_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BLIP with its word 'cat' pushed far above every other: whatever the picture, it says
    'cat cat' (with --max-length 3: its start token and two words). A real BLIP, loaded as any folder."""
    import torch
    from safetensors.torch import load_file, save_file

    from video2dream.models import hub

    dest = tmp_path_factory.mktemp("parrot") / "blip"
    shutil.copytree(hub.tiny_model_dir("tiny:blip"), dest)
    vocab = (dest / "vocab.txt").read_text(encoding="utf-8").split("\n")
    weights = load_file(dest / "model.safetensors")
    bias = weights["text_decoder.cls.predictions.bias"].clone()
    bias[vocab.index("cat")] = 1e4
    weights["text_decoder.cls.predictions.bias"] = bias
    save_file({k: v.contiguous() for k, v in weights.items()}, dest / "model.safetensors",
              metadata={"format": "pt"})
    assert torch.is_tensor(bias)
    return dest


def test_stop_at_fixed_point(own: dict[str, Path], parrot_blip: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chain"
    args = ("--preset", "tiny", "--caption-model", parrot_blip, "--min-length", "1", "--max-length", "3")
    assert cli("telephone", own["rgb"], "-o", out, "--steps", "5", "--stop-at-fixed-point", *args) == 0
    err = capsys.readouterr().err
    assert "fixed point" in err and "step 1" in err and "step 0" in err
    table = rows(out)
    assert [r["caption"] for r in table] == ["cat cat", "cat cat"]
    assert table[1]["repeats_step"] == "0"
    assert not (out / "step_002.png").exists()
    assert strip_captions(out / "chain_strip.png") == ["cat cat", "cat cat"]
    assert duration(out / "chain.mp4") == pytest.approx(2, abs=0.1)
    # Asking for more does not go past it while the stop is on...
    assert cli("telephone", own["rgb"], "-o", out, "--steps", "8", "--stop-at-fixed-point") == 0
    assert len(rows(out)) == 2
    # ... and without it the chain goes on, every repeat marked.
    assert cli("telephone", own["rgb"], "-o", out, "--steps", "3", "--no-stop-at-fixed-point") == 0
    table = rows(out)
    assert [r["repeats_step"] for r in table] == ["", "0", "0", "0"]


# -- a folder of images ---------------------------------------------------------------------------


def test_folder_of_images(own: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    shutil.copy(own["rgb"], folder / "a.png")
    shutil.copy(own["jpeg"], folder / "a.jpg")  # the same stem: its own folder all the same
    shutil.copy(own["rgba"], folder / "b.png")
    (folder / "notes.txt").write_text("not a picture\n", encoding="utf-8")
    out = tmp_path / "out"
    assert cli("telephone", folder, "-o", out, "--steps", "1", "--preset", "tiny") == 0
    err = capsys.readouterr().err
    assert "notes.txt" in err
    chains = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(chains) == 3 and "a" in chains and "b" in chains
    for name in chains:
        assert len(rows(out / name)) == 2 and (out / name / "chain_strip.png").is_file()
    with Image.open(out / "index_strip.png") as index:
        assert index.height > 3 * 128
    # Up to date: nothing painted again.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("step_*.png")}
    assert cli("telephone", folder, "-o", out, "--steps", "1") == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("step_*.png")} == stamps
    assert capsys.readouterr().err.count("up to date") == 3


# -- a video, two rounds --------------------------------------------------------------------------


def test_video_two_rounds(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", "testsrc2=size=64x48:rate=10:duration=2", "sine=duration=2",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"))
    run = tmp_path / "run"
    assert cli("telephone", clip, "-o", run, "--steps", "2", "--preset", "tiny") == 0
    names = ["000001.png", "000002.png"]
    for folder in ("frames", "dreams", "dreams_r02"):
        assert sorted(p.name for p in (run / folder).glob("*.png")) == names
    first, second = rows(run, "prompts.csv"), rows(run, "prompts_r02.csv")
    assert [r["filename"] for r in second] == names
    # Round 2 paints what BLIP saw in round 1's dreams, with other seeds: other pictures.
    assert not np.array_equal(pixels(run / "dreams" / names[0]), pixels(run / "dreams_r02" / names[0]))
    params = parse_parameters(read_parameters(run / "dreams_r02" / names[0]) or "")
    assert params["prompt"] == second[0]["prompt"] and int(params["Seed"]) == 100_000 + 1
    assert first[0]["caption"] != "" and second[0]["caption"] != ""
    drift = rows(run, "drift.csv")
    assert [r["folder"] for r in drift] == ["frames", "dreams", "dreams_r02"]
    assert (run / "drift.png").is_file()
    grid = media.probe(run / "dream_grid.mp4")  # frames | round 1 | round 2, at the source's size
    assert grid.width == 3 * 64 and grid.height == 48 and grid.has_audio
    assert grid.duration == pytest.approx(2, abs=0.1)
    # One video per round.
    assert cli("assemble", run, "--round", "2") == 0
    p = media.probe(run / "dream_r02.mp4")
    assert (p.width, p.height) == (64, 48) and p.duration == pytest.approx(2, abs=0.1)
    assert cli("assemble", run, "--round", "3") == 1
    # Up to date on a second run, and a third round on request.
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("dreams*/*.png")}
    assert cli("telephone", clip, "-o", run, "--steps", "3") == 0
    assert {p: p.stat().st_mtime_ns for p in run.rglob("dreams*/*.png") if p in stamps} == stamps
    assert sorted(p.name for p in (run / "dreams_r03").glob("*.png")) == names
    assert media.probe(run / "dream_grid.mp4").width == 4 * 64


# -- the command line ------------------------------------------------------------------------------


def test_help_and_friendly_errors(own: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("telephone", "--help") == 0
    help_text = capsys.readouterr().out
    assert "example:" in help_text and EXAMPLES["telephone"] in help_text
    for flag in ("--steps", "--steps-per-image", "--mode", "--stop-at-fixed-point", "--min-length",
                 "--num-beams", "--no-repeat-ngram-size", "--model", "--guidance", "--seed", "--crossfade"):
        assert flag in help_text
    text = tmp_path / "words.txt"
    text.write_text("not a picture\n" * 10, encoding="utf-8")
    fake = tmp_path / "words.png"
    fake.write_text("not a picture\n" * 10, encoding="utf-8")
    out = tmp_path / "out"
    cases = [
        ((tmp_path / "missing.png", "-o", out), "not found"),
        ((text, "-o", out), "neither an image"),
        ((fake, "-o", out), "not an image Pillow can open"),
        ((own["rgb"], "-o", out, "--steps", "0"), "--steps"),
        ((own["rgb"], "-o", out, "--steps-per-image", "0"), "--steps-per-image"),
        ((own["rgb"], "-o", out, "--crossfade", "2"), "--crossfade"),
        ((own["rgb"], "-o", out, "--mode", "poetry"), "--mode"),
    ]
    for args, words in cases:
        capsys.readouterr()
        assert cli("telephone", *args) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("video2dream: error:") and words in err and len(err.splitlines()) == 1
        assert not out.exists()
    assert cli("extract", own["rgb"], "-o", out) == 1
    assert "video2dream telephone" in capsys.readouterr().err


def test_settings_preset_and_config(tmp_path: Path) -> None:
    """Presets still work for the chain: the tiny preset's models, and a telephone section in a config."""
    from video2dream.settings import resolve
    from video2dream.telephone import chain_settings

    config = tmp_path / "t.yaml"
    config.write_text("telephone:\n  steps: 4\n  mode: fast\n  hold: 0.5\n", encoding="utf-8")
    s = chain_settings(resolve(None, "tiny", config, {"telephone": {"stop_at_fixed_point": True}}))
    assert s.interrogate.caption_model == "tiny:blip" and s.generate.model == "tiny:sdxl"
    assert (s.telephone.steps, s.interrogate.mode, s.telephone.hold) == (4, "fast", 0.5)
    default = chain_settings(resolve())
    # The original game's defaults: BLIP caption alone, 30-100 tokens, 5 beams, no-repeat 2, SDXL base.
    i, g = default.interrogate, default.generate
    assert (i.mode, i.min_length, i.max_length, i.num_beams, i.no_repeat_ngram_size) == ("caption", 30, 100, 5, 2)
    assert i.caption_model.startswith("Salesforce/blip-image-captioning-")
    assert g.model == "stabilityai/stable-diffusion-xl-base-1.0"
    assert json.loads(json.dumps(default.to_dict()))["telephone"]["mode"] == "caption"


def test_video_stops_at_fixed_point(parrot_blip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip(tmp_path / "clip.mp4", "testsrc2=size=64x48:rate=10:duration=2",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    run = tmp_path / "run"
    assert cli("telephone", clip, "-o", run, "--steps", "4", "--stop-at-fixed-point", "--preset", "tiny",
               "--caption-model", parrot_blip, "--min-length", "1", "--max-length", "3") == 0
    assert "at round 2" in capsys.readouterr().err
    # Round 1 painted 'cat cat'; BLIP reads 'cat cat' in its dreams again: round 2 would repeat it.
    assert {r["caption"] for r in rows(run, "prompts_r02.csv")} == {"cat cat"}
    assert (run / "dreams").is_dir() and not (run / "dreams_r02").exists()
    assert [r["folder"] for r in rows(run, "drift.csv")] == ["frames", "dreams"]
    assert media.probe(run / "dream_grid.mp4").width == 2 * 64
