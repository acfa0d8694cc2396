"""Directing the dream: styles (--style, --negative-style, styles.csv by time and by shot), pinned
seeds, variants and pick, the style image; each bad input one line with the folder unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import cli, make_clip, one_line_error, snapshot
from PIL import Image

from video2dream.models.cache import ModelCache
from video2dream.pipeline import _saver
from video2dream.pngmeta import read_png_text
from video2dream.runfolder import RunFolder
from video2dream.settings import resolve
from video2dream.stages import generate as gen
from video2dream.stages import morph as mo
from video2dream.stages.extract import extract
from video2dream.styles import apply_style

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

NAMES = ["000001.png", "000002.png", "000003.png"]
PROMPTS = ["a red cat", "a blue dog", "a green boat"]


@pytest.fixture(scope="module")
def models() -> ModelCache:
    return ModelCache()


def tiny(**generate) -> object:
    return resolve(preset="tiny", overrides={"generate": {"width": 64, "height": 64, "steps": 2, "batch_size": 1,
                                                          **generate}})


@pytest.fixture(scope="module")
def base(models: ModelCache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 keyframes at 0, 1 and 2 s, hand-written prompts, their dreams; tests copy it."""
    clip = make_clip(tmp_path_factory.mktemp("directing-clip") / "clip.mp4", "testsrc2=size=64x48:rate=10:duration=3",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    run = RunFolder(tmp_path_factory.mktemp("directing-base") / "run")
    settings = tiny()
    extract(run, clip, settings)
    pd.DataFrame({"filename": NAMES, "prompt": PROMPTS}).to_csv(run.prompts_csv, index=False)
    gen.generate(run, settings, models=models)
    _saver(run, settings)()  # as the commands save them: the CLI calls below read them
    with run.lock():  # its file stays, as after any command: snapshots compare the rest
        pass
    return run.root


def copy(base: Path, tmp_path: Path) -> RunFolder:
    shutil.copytree(base, tmp_path / "run", symlinks=True)
    return RunFolder(tmp_path / "run")


def text(path: Path) -> str:
    return read_png_text(path)["parameters"]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def keys(run: RunFolder, settings) -> dict[str, str]:
    return {j.name: j.key for j in gen.plan(run, settings)[0]}


def todo(run: RunFolder, settings) -> list[str]:
    return [u.name for u in gen.plan_units(run, settings)[0]]


def test_a_style_template_and_negative_style(base: Path, tmp_path: Path, models: ModelCache) -> None:
    assert apply_style("oil painting of {prompt}", "a cat") == "oil painting of a cat"
    assert apply_style("oil painting", "a cat") == "a cat, oil painting"
    assert apply_style("{x} {prompt}", "a {cat}") == "{x} a {cat}"  # plain text: braces are the user's
    assert apply_style(None, "a cat") == apply_style("", "a cat") == "a cat"
    run = copy(base, tmp_path)
    before = run.prompts_csv.read_bytes()
    assert todo(run, tiny()) == []
    assert keys(run, tiny(style=None, negative_style="none")) == keys(run, tiny())  # unset: keys as before
    styled = tiny(style="oil painting of {prompt}", negative_style="blurry")
    assert todo(run, styled) == NAMES
    assert gen.generate(run, styled, models=models).painted == NAMES
    params = text(run.dreams_dir / "000002.png")
    assert params.startswith("oil painting of a blue dog\nNegative prompt: blurry\n"), params
    assert run.prompts_csv.read_bytes() == before  # the rows' words stay as written
    appended = tiny(style="oil painting")
    assert [j.prompt for j in gen.plan(run, appended)[0]] == [f"{p}, oil painting" for p in PROMPTS]
    # the in-betweens' ends are these dreams: morph plans through the same keys
    ends = {m.a.name: m.a.key for m in mo.plan(run, styled)}
    assert ends["000001.png"] == keys(run, styled)["000001.png"]


def write_styles(run: RunFolder, *rows: str, header: str = "start,end,style,negative_style") -> None:
    (run.root / "styles.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


def test_a_range_repaints_exactly_its_dreams(base: Path, tmp_path: Path, models: ModelCache) -> None:
    run, settings = copy(base, tmp_path), tiny()
    before = keys(run, settings)
    write_styles(run, "0.5,1.5,underwater,")
    assert todo(run, settings) == ["000002.png"]
    assert gen.generate(run, settings, models=models).painted == ["000002.png"]
    assert text(run.dreams_dir / "000002.png").startswith("a blue dog, underwater\n")
    write_styles(run, "0.5,1.5,deep underwater,")  # a changed range
    assert todo(run, settings) == ["000002.png"]
    write_styles(run, "0.5,1.5,deep underwater,", "1,2,neon {prompt},dark")  # an added, overlapping one
    assert todo(run, settings) == ["000002.png", "000003.png"]
    jobs = {j.name: j for j in gen.plan(run, settings)[0]}
    assert jobs["000002.png"].prompt == "neon a blue dog, deep underwater"  # file order: each wraps the last
    assert jobs["000003.png"].prompt == "neon a green boat" and jobs["000003.png"].negative_prompt == "dark"
    assert keys(run, settings)["000001.png"] == before["000001.png"]
    (run.root / "styles.csv").unlink()
    assert keys(run, settings) == before


def test_shot_ranges_follow_the_cuts(base: Path, tmp_path: Path) -> None:
    run, settings = copy(base, tmp_path), tiny()
    frames = pd.read_csv(run.frames_csv, dtype=str)
    frames["kind"] = ["tick", "tick", "cut"]  # shot 1: frames 1-2, shot 2: frame 3
    frames.to_csv(run.frames_csv, index=False)
    write_styles(run, "shot 2,,neon {prompt},")
    assert todo(run, settings) == ["000003.png"]
    write_styles(run, "SHOT 1,,chalk,")
    assert todo(run, settings) == ["000001.png", "000002.png"]


def test_a_pinned_seed_repaints_one_dream_as_that_seed_would(base: Path, tmp_path: Path, models: ModelCache) -> None:
    run, settings = copy(base, tmp_path), tiny()
    df = pd.read_csv(run.prompts_csv, dtype=str, keep_default_na=False)
    df["seed"] = ["", "12345", ""]
    df.to_csv(run.prompts_csv, index=False)
    assert todo(run, settings) == ["000002.png"]
    assert gen.generate(run, settings, models=models).painted == ["000002.png"]
    assert "Seed: 12345," in text(run.dreams_dir / "000002.png")
    other = copy(base, tmp_path / "other")  # the seed rule giving frame 2 the seed 12345
    ruled = tiny(seed=12343)
    gen.generate(other, ruled, models=models)
    assert np.array_equal(pixels(run.dreams_dir / "000002.png"), pixels(other.dreams_dir / "000002.png"))
    assert keys(run, settings)["000002.png"] == keys(other, ruled)["000002.png"]
    df["seed"] = ["", "12345.0", ""]  # as a spreadsheet may save it: the same seed
    df.to_csv(run.prompts_csv, index=False)
    assert todo(run, settings) == []


def test_interrogate_keeps_the_seed_column(base: Path, tmp_path: Path, models: ModelCache) -> None:
    from video2dream.stages.interrogate import interrogate

    run, settings = copy(base, tmp_path), tiny()
    df = pd.read_csv(run.prompts_csv, dtype=str, keep_default_na=False)
    df["seed"] = ["7", "", ""]
    df.to_csv(run.prompts_csv, index=False)
    interrogate(run, settings, force=True, models=models)
    after = pd.read_csv(run.prompts_csv, dtype=str, keep_default_na=False)
    assert after["seed"].tolist() == ["7", "", ""]
    assert after["prompt"].tolist() != PROMPTS  # written again, the seed kept


@pytest.mark.parametrize(("name", "content", "words"), [
    ("styles.csv", "begin,end,style,negative_style\n0,1,x,\n", ["header", "start,end,style,negative_style"]),
    ("styles.csv", "start,end,style,negative_style\n0,1,x,\nabc,2,y,\n", ["row 3", "'abc'"]),
    ("styles.csv", "start,end,style,negative_style\n2,1,x,\n", ["row 2", "start <= end"]),
    ("styles.csv", "start,end,style,negative_style\n99,120,x,\n", ["row 2", "after the video ends"]),
    ("styles.csv", "start,end,style,negative_style\nshot 2,,x,\n", ["row 2", "no shot 2", "1 shot"]),
    ("styles.csv", "start,end,style,negative_style\nshot 1,3,x,\n", ["row 2", "end must be empty"]),
    ("prompts.csv", "filename,prompt,seed\n000001.png,a,\n000002.png,b,x1\n000003.png,c,-4\n", ["row 3", "seed 'x1'"]),
])
def test_bad_directions_are_one_line_and_change_nothing(base: Path, tmp_path: Path, capsys, name: str,
                                                         content: str, words: list[str]) -> None:
    run = copy(base, tmp_path)
    (run.root / name).write_text(content, encoding="utf-8")
    before = snapshot(run.root)
    capsys.readouterr()
    one_line_error(cli("generate", run.root), capsys.readouterr().err, name, *words)
    assert snapshot(run.root) == before


def test_variants_and_pick_repaint_nothing(base: Path, tmp_path: Path, models: ModelCache, capsys) -> None:
    from video2dream.seeds import variant_seed
    from video2dream.stages import variants as va

    run, settings = copy(base, tmp_path), tiny()
    dreams = snapshot(run.dreams_dir)
    r = va.generate_variants(run, settings, 2, rows="2-3", models=models)
    assert r.painted == ["000002_01.png", "000002_02.png", "000003_01.png", "000003_02.png"]
    assert snapshot(run.dreams_dir) == dreams  # candidates only
    seed = variant_seed(2, 2)  # frame 2's rule seed is 0 + 2
    assert f"Seed: {seed}," in text(run.root / "variants" / "000002_02.png")
    assert va.plan_units(run, settings, 2, rows="2-3")[0] == []  # current: a second call paints nothing
    chosen = pixels(run.root / "variants" / "000002_02.png")
    capsys.readouterr()
    assert cli("pick", run.root, "000002.png", 2) == 0, capsys.readouterr().err
    assert np.array_equal(pixels(run.dreams_dir / "000002.png"), chosen)
    assert not (run.root / "variants" / "000002_02.png").exists()
    assert pd.read_csv(run.prompts_csv, dtype=str, keep_default_na=False)["seed"].tolist() == ["", str(seed), ""]
    assert todo(run, settings) == []  # the picked dream's key is current: nothing repainted
    assert cli("pick", run.root, "3", 1) == 0
    assert todo(run, settings) == []
    assert cli("generate", run.root, "--variants", 1, "--rows", "1") == 0, capsys.readouterr().err
    left = sorted(p.name for p in (run.root / "variants").iterdir())
    assert left == ["000001_01.png", "000002_01.png", "000003_02.png"]


def test_variants_and_pick_refuse_bad_input_in_one_line(base: Path, tmp_path: Path, models: ModelCache,
                                                        capsys) -> None:
    from video2dream.stages import variants as va

    run, settings = copy(base, tmp_path), tiny()
    va.generate_variants(run, settings, 1, rows="1", models=models)
    (run.root / "variants" / "000001_01.png").rename(run.root / "variants" / "000001_02.png")
    df = pd.read_csv(run.prompts_csv, dtype=str, keep_default_na=False)
    df.loc[0, "prompt"] = "a red hat"  # words changed since the candidates were painted
    df.to_csv(run.prompts_csv, index=False)
    before = snapshot(run.root)
    capsys.readouterr()
    for args, words in [(("pick", run.root, "9", 1), ["no frame '9'"]),
                        (("pick", run.root, "1", 3), ["000001.png has no candidate 3", "--variants"]),
                        (("pick", run.root, "1", 2), ["000001_02.png was painted with other"]),
                        (("generate", run.root, "--variants", 0), ["--variants 0"]),
                        (("generate", run.root, "--variants", 2, "--rows", "2-9"), ["no frame 4"]),
                        (("generate", run.root, "--variants", 2, "--rows", "x"), ["12,15-18"]),
                        (("generate", run.root, "--rows", "1"), ["--rows", "--variants K"])]:
        one_line_error(cli(*args), capsys.readouterr().err, *words)
        assert snapshot(run.root) == before, args


def test_a_style_image_changes_the_dreams_and_their_keys(base: Path, tmp_path: Path, models: ModelCache) -> None:
    from video2dream.pipeline import status_report

    run = copy(base, tmp_path)
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (40, 40), (220, 30, 30)).save(red)
    Image.new("RGB", (40, 40), (20, 40, 230)).save(blue)
    plain = {n: pixels(run.dreams_dir / n) for n in NAMES}
    styled = tiny(style_image=str(red), style_image_scale=1.0)
    assert todo(run, styled) == NAMES
    assert gen.generate(run, styled, models=models).painted == NAMES
    assert not np.array_equal(pixels(run.dreams_dir / "000001.png"), plain["000001.png"])
    assert 'IP-Adapter: "Model: ip-adapter_sdxl, Image: red.png, Weight: 1.0"' in text(run.dreams_dir / "000001.png")
    shutil.copy(red, tmp_path / "red_copy.png")  # the same picture elsewhere: the same key (its content's hash)
    assert keys(run, tiny(style_image=str(tmp_path / "red_copy.png"), style_image_scale=1.0)) == keys(run, styled)
    painted = pixels(run.dreams_dir / "000001.png")
    shutil.copy(blue, red)  # another picture at the same path: every dream is painted again
    assert todo(run, styled) == NAMES
    gen.generate(run, styled, models=models)
    assert not np.array_equal(pixels(run.dreams_dir / "000001.png"), painted)
    assert todo(run, tiny(style_image=str(red), style_image_scale=0.5)) == NAMES  # its weight is in the key too
    _saver(run, styled)()
    assert "style_image=" in status_report(run) and "3/3 dreams current" in status_report(run)
    # morph's ends are these dreams: in-betweens take the same look
    assert {m.a.name: m.a.key for m in mo.plan(run, styled)}["000001.png"] == keys(run, styled)["000001.png"]


def test_a_bad_style_image_or_a_remote_backend_is_one_line(base: Path, tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test")  # the token is checked first; no request is made
    run = copy(base, tmp_path)
    picture, notes = tmp_path / "look.png", tmp_path / "notes.txt"
    Image.new("RGB", (8, 8)).save(picture)
    notes.write_text("not a picture", encoding="utf-8")
    before = snapshot(run.root)
    capsys.readouterr()
    for args, words in [(("--style-image", tmp_path / "missing.png"), ["missing.png cannot be read"]),
                        (("--style-image", notes), ["notes.txt is not a picture"]),
                        (("--style-image", picture, "--backend", "replicate"),
                         ["--backend replicate cannot paint with a style image"]),
                        (("--style-image", picture, "--style-image-scale", 3), ["--style-image-scale", "0 to 2"])]:
        one_line_error(cli("generate", run.root, *args), capsys.readouterr().err, *words)
        assert snapshot(run.root) == before, args
    # `run` refuses it before extract and before any caption is paid for
    clip = make_clip(tmp_path / "c.mp4", "testsrc2=size=64x48:rate=10:duration=1")
    one_line_error(cli("run", clip, "-o", tmp_path / "new", "--preset", "tiny", "--backend", "replicate",
                       "--style-image", picture), capsys.readouterr().err, "cannot paint with a style image")
    assert not (tmp_path / "new").exists()


def test_replicate_paints_the_styled_prompt_with_the_pinned_seed(base: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_replicate import Server

    server = Server()
    try:
        monkeypatch.setenv("REPLICATE_BASE_URL", server.url)
        monkeypatch.setenv("REPLICATE_API_TOKEN", server.fake.token)
        monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.02")
        fake = server.reset()
        run = copy(base, tmp_path)
        df = pd.read_csv(run.prompts_csv, dtype=str, keep_default_na=False)
        df["seed"] = ["", "12345", ""]
        df.to_csv(run.prompts_csv, index=False)
        gen.generate(run, tiny(style="ink drawing of {prompt}"), backend="replicate")
        sent = {text for _kind, text in fake.created_for("paint")}
        assert "ink drawing of a blue dog|12345|" in sent and "ink drawing of a red cat|1|" in sent, sent
    finally:
        server.stop()


def test_the_variants_strip_script_draws_and_measures(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from conftest import ROOT

    dest = tmp_path / "strip.png"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "variants_strip.py"), str(dest), "--variants", "2",
                           "--size", "64", "--measure"], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio" in proc.stdout
    with Image.open(dest) as im:
        assert im.width > 3 * 64  # the dream and two candidates side by side


def test_ray_paints_styles_style_images_and_variants_as_local_does(base: Path, tmp_path: Path,
                                                                   models: ModelCache) -> None:
    """The Ray actors run the local backend: the same pictures, byte for byte (batches of one, one thread)."""
    import hashlib
    import logging
    import os

    from video2dream.stages import variants as va

    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    look = tmp_path / "look.png"
    Image.new("RGB", (40, 40), (200, 150, 20)).save(look)
    write = {"style": "ink {prompt}", "style_image": str(look), "style_image_scale": 0.8}
    runs = {}
    for backend in ("local", "ray"):
        run = copy(base, tmp_path / backend)
        write_styles(run, "shot 1,,blue,")
        df = pd.read_csv(run.prompts_csv, dtype=str, keep_default_na=False)
        df["seed"] = ["", "99", ""]
        df.to_csv(run.prompts_csv, index=False)
        runs[backend] = run
    gen.generate(runs["local"], tiny(**write), models=models)
    va.generate_variants(runs["local"], tiny(**write), 1, rows="2", models=models)
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the actors' torch threads, as this process's: the same last bits
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        assert gen.generate(runs["ray"], tiny(**write), backend="ray").painted == NAMES
        va.generate_variants(runs["ray"], tiny(**write), 1, rows="2", backend="ray")
    finally:
        ray.shutdown()
        os.environ.pop("OMP_NUM_THREADS") if threads is None else os.environ.update(OMP_NUM_THREADS=threads)

    def hashes(run: RunFolder) -> dict[str, str]:
        return {str(p.relative_to(run.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for folder in ("dreams", "variants") for p in sorted((run.root / folder).glob("*.png"))}

    assert hashes(runs["ray"]) == hashes(runs["local"]) and len(hashes(runs["local"])) == 4


def test_a_morphs_ends_are_the_styled_dreams(base: Path, tmp_path: Path, models: ModelCache) -> None:
    """With a style, a range, a pinned seed and a style image, t=0 and t=1 paint exactly the dreams."""
    from video2dream.models.painter import Ends

    run = copy(base, tmp_path)
    look = tmp_path / "look.png"
    Image.new("RGB", (40, 40), (30, 200, 90)).save(look)
    settings = tiny(style="ink {prompt}", style_image=str(look), style_image_scale=0.8)
    write_styles(run, "1,2,neon {prompt},")
    df = pd.read_csv(run.prompts_csv, dtype=str, keep_default_na=False)
    df["seed"] = ["", "77", ""]
    df.to_csv(run.prompts_csv, index=False)
    gen.generate(run, settings, models=models)
    jobs = {j.name: j for j in gen.plan(run, settings)[0]}
    ja, jb = jobs["000001.png"], jobs["000002.png"]
    painter = models.painter(settings)
    with Image.open(look) as im:
        painter.set_style(im.convert("RGB"), 0.8)
    for t, dream in ((0.0, "000001.png"), (1.0, "000002.png")):
        image = painter.paint_between(Ends([ja.prompt], [ja.negative_prompt], [ja.seed]),
                                      Ends([jb.prompt], [jb.negative_prompt], [jb.seed]), [t], 64, 64, 2, 5.0)[0]
        assert np.array_equal(np.asarray(image).astype(int), pixels(run.dreams_dir / dream)), t
