"""morph: the in-betweens between consecutive dreams (their number, their ends, their keys, a kill
and resume, hard cuts, audio pacing) and `assemble --transition morph` (duration, sync, side by side)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import cli, ffmpeg, make_clip, one_line_error, snapshot
from PIL import Image

from video2dream import media
from video2dream.backends.local import LocalBackend
from video2dream.models.cache import ModelCache
from video2dream.pipeline import _saver
from video2dream.runfolder import OLD_TEMP, TMP_MARK, RunFolder
from video2dream.settings import replace_section, resolve
from video2dream.stages import morph as mo
from video2dream.stages.assemble import assemble
from video2dream.stages.extract import extract
from video2dream.stages.generate import generate
from video2dream.units import Unit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["a red cat on a roof", "a blue dog in the snow", "a green boat at sea"]
OUT_FPS = 6.0  # 2 in-betweens in a 1 s gap: each picture held 1/3 s, two output frames


@pytest.fixture(scope="module")
def models() -> ModelCache:
    return ModelCache()


@pytest.fixture(scope="module")
def click_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s with a click 0.7 s into every second (and silence between)."""
    return make_clip(
        tmp_path_factory.mktemp("morph-clip") / "clicks.mp4",
        "testsrc2=size=160x120:rate=25:duration=3",
        "aevalsrc='if(between(mod(t,1),0.7,0.72),0.9*sin(2*PI*2000*t),0)':s=22050:d=3",
        args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"),
    )


def tiny(**morph) -> object:
    return resolve(preset="tiny", overrides={
        "generate": {"width": 64, "height": 64, "batch_size": 1},
        "assemble": {"transition": "morph", "out_fps": OUT_FPS},
        "morph": {"inbetweens": 2, **morph}})


@pytest.fixture(scope="module")
def base(click_clip: Path, models: ModelCache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 keyframes (hand-written prompts), their dreams and 2 in-betweens per gap; tests copy it."""
    run = RunFolder(tmp_path_factory.mktemp("morph-base") / "run")
    settings = tiny()
    extract(run, click_clip, settings)
    pd.DataFrame({"filename": [f"{k:06d}.png" for k in (1, 2, 3)], "prompt": PROMPTS}).to_csv(
        run.prompts_csv, index=False)
    generate(run, settings, models=models)
    mo.morph(run, settings, models=models)
    _saver(run, settings)()  # as the commands save them: the CLI calls below read them
    return run.root


def copy(base: Path, tmp_path: Path) -> RunFolder:
    shutil.copytree(base, tmp_path / "run", symlinks=True)
    return RunFolder(tmp_path / "run")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_the_number_and_names_of_in_betweens(base: Path) -> None:
    run = RunFolder(base)
    names = sorted(p.name for p in run.morphs_dir.iterdir())
    assert names == ["000001-000002_01.png", "000001-000002_02.png", "000002-000003_01.png", "000002-000003_02.png"]
    assert [m.t for m in mo.plan(run, tiny())] == [0.3333, 0.6667] * 2
    # Unset: as many as the output's frame rate shows in each 1 s gap, less the keyframe.
    assert len(mo.plan(run, tiny(inbetweens=None))) == 2 * (int(OUT_FPS) - 1)
    assert mo.plan(run, tiny(inbetweens=0)) == []
    with pytest.raises(ValueError, match="in-between"):
        Unit("000001.png", "morph")
    with pytest.raises(ValueError, match="neither"):
        Unit("000001-000002_01.png", "paint")


def test_the_ends_are_the_keyframes_themselves(base: Path, models: ModelCache) -> None:
    """t=0 and t=1 start from exactly the keyframes' noise (which is the pipeline's own), and paint
    exactly the dreams (batch size 1 on both sides)."""
    import torch

    from video2dream.models.painter import Ends, slerp

    run, settings = RunFolder(base), tiny()
    painter = models.painter(settings)
    a, b = painter.start([1], 64, 64, 4).noise, painter.start([2], 64, 64, 4).noise
    pipe = painter.pipe
    own = pipe.prepare_latents(1, pipe.unet.config.in_channels, 64, 64, a.dtype, torch.device("cpu"),
                               [torch.Generator("cpu").manual_seed(1)])
    assert torch.equal(a * pipe.scheduler.init_noise_sigma, own)  # as the pipeline scales the latents given
    ends = slerp(torch.cat([a, a]), torch.cat([b, b]), torch.tensor([0.0, 1.0]))
    assert torch.equal(ends[0], a[0]) and torch.equal(ends[1], b[0])
    middle = slerp(a, b, torch.tensor([0.5]))
    assert not torch.equal(middle, a) and abs(float(middle.std()) - float(a.std())) < 0.1  # keeps its norm
    jobs = {j.name: j for j in mo.gen.plan(run, settings)[0]}
    ja, jb = jobs["000001.png"], jobs["000002.png"]
    for t, dream in ((0.0, "000001.png"), (1.0, "000002.png")):
        image = painter.paint_between(Ends([ja.prompt], [ja.negative_prompt], [ja.seed]),
                                      Ends([jb.prompt], [jb.negative_prompt], [jb.seed]), [t], 64, 64, 4, 5.0)[0]
        assert np.array_equal(np.asarray(image).astype(int), pixels(run.dreams_dir / dream)), t
    inner = pixels(run.morphs_dir / "000001-000002_01.png")
    assert not np.array_equal(inner, pixels(run.dreams_dir / "000001.png"))


def test_img2img_ends_are_the_keyframes_too(base: Path, models: ModelCache) -> None:
    """With --strength the frames' VAE latents are interpolated as well; t=0 and t=1 are still the
    dreams img2img paints from each frame."""
    from video2dream.models.painter import Ends

    run = RunFolder(base)
    painter = models.painter(tiny())
    frames = [Image.open(run.frames_dir / n).convert("RGB") for n in ("000001.png", "000002.png")]
    a = Ends(["a red cat"], [""], [1], frames[:1])
    b = Ends(["a blue dog"], ["ugly"], [2], frames[1:])
    for t, (ends, frame) in ((0.0, (a, frames[0])), (1.0, (b, frames[1]))):
        dream = painter.paint(ends.prompts, ends.negative_prompts, ends.seeds, 64, 64, 4, 5.0, strength=0.5,
                              init_images=[frame])[0]
        between = painter.paint_between(a, b, [t], 64, 64, 4, 5.0, strength=0.5)[0]
        assert np.array_equal(np.asarray(between), np.asarray(dream)), t
    middle = painter.paint_between(a, b, [0.5], 64, 64, 4, 5.0, strength=0.5)[0]
    assert not np.array_equal(np.asarray(middle), np.asarray(dream))


def test_a_changed_keyframe_repaints_only_its_gaps(base: Path, tmp_path: Path, models: ModelCache) -> None:
    run = copy(base, tmp_path)
    before = {p.name: p.read_bytes() for p in run.morphs_dir.iterdir()}
    df = pd.read_csv(run.prompts_csv, dtype=str, keep_default_na=False)
    df.loc[0, "prompt"] = "a purple owl in a forest"
    df.to_csv(run.prompts_csv, index=False)
    todo, total = mo.plan_units(run, tiny())
    assert [u.name for u in todo] == ["000001-000002_01.png", "000001-000002_02.png"] and total == 4
    assert mo.status_data(run, tiny())["stale"] == [u.name for u in todo]
    r = mo.morph(run, tiny(), models=models)
    assert sorted(r.painted) == [u.name for u in todo] and r.up_to_date == 2
    after = {p.name: p.read_bytes() for p in run.morphs_dir.iterdir()}
    assert [n for n in after if after[n] != before[n]] == [u.name for u in todo]
    # The middle keyframe is in both gaps.
    df.loc[1, "prompt"] = "a yellow bus"
    df.to_csv(run.prompts_csv, index=False)
    assert len(mo.plan_units(run, tiny())[0]) == 4


class StopAfterFirstBatch(LocalBackend):
    """Ctrl-C as the first batch comes back (the interrupt lands between two model calls)."""

    def execute(self, root, units, settings, wanted=None):
        for batch in super().execute(root, units, settings, wanted):
            yield batch
            raise KeyboardInterrupt


def test_killed_after_a_batch_resumes(base: Path, tmp_path: Path, models: ModelCache) -> None:
    run = copy(base, tmp_path)
    names = sorted(p.name for p in run.morphs_dir.iterdir())
    shutil.rmtree(run.morphs_dir)
    settings = replace_section(tiny(), "generate", batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        mo.morph(run, settings, backend=StopAfterFirstBatch(models))
    done = sorted(p.name for p in run.morphs_dir.iterdir())
    assert done == ["000001-000002_01.png", "000001-000002_02.png"]  # the first batch, whole, nothing else
    assert not [p for p in run.root.rglob("*") if TMP_MARK in p.name or OLD_TEMP.fullmatch(p.name)]
    r = mo.morph(run, settings, models=models)
    assert sorted(r.painted) == ["000002-000003_01.png", "000002-000003_02.png"] and r.up_to_date == 2
    assert mo.status_data(run, settings)["state"] == "current" and len(names) == 4
    for name in names:  # the same pictures as painted in one go (another batch: within a level or so)
        assert np.abs(pixels(run.morphs_dir / name) - pixels(base / "morphs" / name)).max() <= 3


def decoded(video: Path, size: tuple[int, int]) -> np.ndarray:
    """Every frame of video, scaled to size, as (frames, h, w, 3) ints."""
    out = subprocess.run([ffmpeg(), "-v", "error", "-i", str(video), "-vf", f"scale={size[0]}:{size[1]}",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, size[1], size[0], 3).astype(int)


def as_shown(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A 64x64 picture as the 160x120 video shows it (cover, centre crop), scaled to size."""
    with Image.open(path) as im:
        cover = im.convert("RGB").resize((160, 160), Image.Resampling.LANCZOS).crop((0, 20, 160, 140))
        return np.asarray(cover.resize(size, Image.Resampling.BILINEAR)).astype(int)


def test_assemble_morph_keeps_duration_and_sync(base: Path, tmp_path: Path) -> None:
    run = copy(base, tmp_path)
    settings = replace_section(tiny(), "assemble", transition="morph", out_fps=OUT_FPS, side_by_side=True)
    r = assemble(run, settings)
    source = media.probe(run.read_record("source")["path"]).duration
    for video in (r.output, r.side_by_side):
        assert abs(media.probe(video).duration - source) <= 1 / OUT_FPS + 0.03, video
    assert media.probe(r.side_by_side).width == 2 * media.probe(r.output).width
    # Keyframe, in-between, in-between, keyframe, ...: each picture on its two output frames.
    order = ["dreams/000001.png", "morphs/000001-000002_01.png", "morphs/000001-000002_02.png",
             "dreams/000002.png", "morphs/000002-000003_01.png", "morphs/000002-000003_02.png", "dreams/000003.png"]
    pictures = [as_shown(run.root / p, (32, 24)) for p in order]
    frames = decoded(r.output, (32, 24))
    assert abs(len(frames) - round(source * OUT_FPS)) <= 1
    for j, frame in enumerate(frames):
        nearest = int(np.argmin([np.abs(frame - p).mean() for p in pictures]))
        expected = min(j // 2, len(order) - 1)
        assert abs(nearest - expected) <= 1 and (nearest == expected or j % 2 == 0 or j // 2 >= 6), (j, nearest)
    assert (run.root / "morphs").is_dir()
    # Cut and crossfade ignore the in-betweens; morph without them says what to run.
    shutil.rmtree(run.morphs_dir)
    assert cli("assemble", run.root, "--transition", "cut", "--out-fps", OUT_FPS) == 0


def test_morph_without_in_betweens_or_from_frames_is_a_clear_error(base: Path, tmp_path: Path, capsys) -> None:
    run = copy(base, tmp_path)
    shutil.rmtree(run.morphs_dir)
    one_line_error(cli("assemble", run.root, "--transition", "morph"), capsys.readouterr().err,
                   "morphs", "video2dream morph")
    one_line_error(cli("assemble", run.root, "--from", "frames", "--transition", "morph"), capsys.readouterr().err,
                   "--transition morph", "frames")
    assert not (run.root / "dream.mp4").exists()


def test_a_cut_keyframe_gets_a_hard_cut(base: Path, tmp_path: Path) -> None:
    run = copy(base, tmp_path)
    df = pd.read_csv(run.frames_csv, dtype=str)
    df["kind"] = ["tick", "tick", "cut"]
    df.to_csv(run.frames_csv, index=False)
    names = [m.name for m in mo.plan(run, tiny())]
    assert names == ["000001-000002_01.png", "000001-000002_02.png"]
    shown = mo.interleave(run, tiny(), ["000001.png", "000002.png", "000003.png"], [0.0, 1.0, 2.0])
    assert [p for p, _ in shown][-2:] == ["dreams/000002.png", "dreams/000003.png"]
    assert mo.status_line(mo.status_data(run, tiny())).startswith("2/2 in-betweens current (1 gaps, 1 hard cut")


def test_audio_pacing_moves_on_the_click(base: Path) -> None:
    run = RunFolder(base)
    linear = [m.t for m in mo.plan(run, tiny(inbetweens=3))]
    paced = [m.t for m in mo.plan(run, tiny(inbetweens=3, pacing="audio"))]
    assert linear[:3] == [0.25, 0.5, 0.75]
    first = paced[:3]  # the gap 0-1 s, shown at 0.25, 0.5, 0.75 s; the click is at 0.70 s
    assert first == sorted(first) and first[0] > 0 and first[-1] < 1
    assert first[1] < 0.25 and first[2] - first[1] > 0.4, paced
    assert paced != linear
    assert mo.paced(np.zeros(50), 3) == [0.25, 0.5, 0.75]  # silence: linear


def test_audio_pacing_without_sound_is_a_clear_error(base: Path, tmp_path: Path, capsys) -> None:
    run = copy(base, tmp_path)
    one_line_error(cli("morph", run.root, "--pacing", "audio", "--audio", "none"), capsys.readouterr().err,
                   "--pacing linear")


def test_morph_refuses_dreams_it_cannot_reproduce(base: Path, tmp_path: Path) -> None:
    """The walk paints with SDXL's base alone: with a refiner its ends would not be the dreams."""
    from video2dream.errors import UserError
    from video2dream.settings import replace_section

    run = copy(base, tmp_path)
    shutil.rmtree(run.morphs_dir)
    before = snapshot(run.root)
    settings = replace_section(tiny(), "generate", refiner="tiny:sdxl-refiner")
    with pytest.raises(UserError, match="--refiner.*crossfade"):
        mo.morph(run, settings)
    assert snapshot(run.root) == before


@pytest.mark.parametrize(("flags", "pronoun"), [({"refiner": "tiny:sdxl-refiner"}, "without it "),
                                                ({"refiner": "tiny:sdxl-refiner", "prompt_weighting": "a1111"},
                                                 "without them ")])
def test_morph_refusal_names_its_options_in_good_grammar(flags: dict, pronoun: str) -> None:
    """Two options named: 'paint the dreams without them', not 'without it'."""
    from video2dream.backends.local import _check_morph
    from video2dream.errors import UserError

    with pytest.raises(UserError, match=pronoun):
        _check_morph(replace_section(tiny(), "generate", **flags))


def test_audio_pacing_on_a_silent_soundtrack_says_it_fell_back(base: Path, tmp_path: Path, capsys) -> None:
    """A silent soundtrack has no onsets: the in-betweens are linear, and the command says so
    (a warning and 'linear pacing'), never 'audio pacing'."""
    run = copy(base, tmp_path)
    quiet = make_clip(tmp_path / "quiet.wav", "anullsrc=r=22050:cl=mono:d=3")
    assert cli("morph", run.root, "--pacing", "audio", "--audio", quiet) == 0
    err = capsys.readouterr().err
    assert "soundtrack is silent" in err and "linear pacing" in err and "audio pacing" not in err, err
    assert "0 in-between(s) painted, 4 up to date" in err  # linear t: the in-betweens already made
