"""The painter's SDXL options (issue 15): the refiner, long and weighted prompts (compel), ControlNet.

Tiny models of the real architectures on the CPU, 64x64, 2 steps: each option changes the dreams and
their keys and nothing else, unset options keep old keys, a long weighted prompt is encoded whole,
the refiner takes over the base's latents at the switch, ControlNet's image follows the frame."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import cli, make_clip, one_line_error, snapshot
from PIL import Image, ImageDraw

from video2dream.models.prompts import parse_a1111
from video2dream.pngmeta import parse_parameters, read_png_text
from video2dream.runfolder import RunFolder
from video2dream.settings import replace_section, resolve
from video2dream.stages import generate as gen
from video2dream.tables import write_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ("--preset", "tiny", "--width", "64", "--height", "64", "--steps", "2")
REFINER = ("--refiner", "tiny:sdxl-refiner", "--refiner-switch", "0.5")
CONTROLNET = ("--controlnet", "canny:tiny:controlnet-sdxl", "--control-scale", "1.0")
WEIGHTED = ("--prompt-weighting", "a1111")
# ~200 tokens with A1111 weights: longer than the 77 SDXL reads, weighted in both rows
LONG = "[quiet] " + ", ".join(f"(glowing lantern {i}:1.4) over a harbour at dusk" for i in range(22))
PROMPTS = [LONG, "((a red fox)) in the snow, (mountains:0.6), " + LONG[:300]]


def dreams(run: Path) -> dict[str, tuple[str, bytes]]:
    """Each dream's key and pixels."""
    out = {}
    for p in sorted((run / "dreams").glob("*.png")):
        with Image.open(p) as im:
            out[p.name] = (read_png_text(p)[gen.KEY_CHUNK], im.convert("RGB").tobytes())
    return out


def rest(run: Path) -> dict[str, bytes]:
    """Everything but the dreams, the saved settings and the lock: what an option must not touch."""
    return {k: v for k, v in snapshot(run).items()
            if not k.startswith("dreams") and k not in ("settings.yaml", ".lock") and "lock" not in k}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with hand-written long, weighted prompts and dreams painted without any option."""
    root = tmp_path_factory.mktemp("options")
    clip = make_clip(root / "c.mp4", "testsrc2=size=128x96:rate=10:duration=2",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    run = root / "run"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    frames = pd.read_csv(run / "frames.csv", dtype=str, keep_default_na=False)  # prompts written by hand:
    write_csv(run / "prompts.csv", pd.DataFrame({"filename": frames["filename"], "time": frames["time"],
                                                 "prompt": PROMPTS, "negative_prompt": ""}))
    assert cli("generate", run, *SMALL) == 0
    assert (run / "truncated.csv").is_file()  # without weighting, the long prompts are cut
    return run


@pytest.mark.parametrize("option", [REFINER, WEIGHTED, CONTROLNET], ids=["refiner", "weighting", "controlnet"])
def test_each_option_changes_the_dreams_and_their_keys_and_nothing_else(
        plain: Path, tmp_path: Path, option: tuple[str, ...]) -> None:
    run = tmp_path / "run"
    shutil.copytree(plain, run)
    before, others = dreams(run), rest(run)
    assert cli("generate", run, *option) == 0
    after = dreams(run)
    for name in before:
        assert after[name][0] != before[name][0], name  # the key covers the option
        assert after[name][1] != before[name][1], name  # and the picture shows it
    if option == WEIGHTED:  # read whole: nothing is cut, and no stale list of cuts is left
        assert not (run / "truncated.csv").exists()
        others.pop("truncated.csv")
    assert rest(run) == others  # frames, prompts, the other stages' records: untouched
    text = parse_parameters(read_png_text(run / "dreams" / "000001.png")["parameters"])
    if option == REFINER:
        assert text["Refiner"] == "tiny-sdxl-refiner" and text["Refiner switch at"] == "0.5"
    if option == CONTROLNET:
        assert text["ControlNet 0"] == "Module: canny, Model: tiny-controlnet-sdxl, Weight: 1.0"
    # Back to none: the old keys again (the dreams painted before the options existed are current).
    settings = resolve(RunFolder(run).saved_settings(), overrides={"generate": {
        "refiner": None, "prompt_weighting": None, "controlnet": None}})
    assert {j.name: j.key for j in gen.plan(RunFolder(run), settings)[0]} == {n: k for n, (k, _) in before.items()}


def test_unset_options_and_their_knobs_keep_old_keys(plain: Path) -> None:
    run = RunFolder(plain)
    base = resolve(run.saved_settings())
    old = [j.key for j in gen.plan(run, base)[0]]
    idle = replace_section(base, "generate", refiner_switch=0.6, control_scale=1.5, depth_model="x/y")
    assert [j.key for j in gen.plan(run, idle)[0]] == old  # knobs of options that are off: in no key
    on = replace_section(base, "generate", refiner="tiny:sdxl-refiner")
    switched = dataclasses.replace(on, generate=dataclasses.replace(on.generate, refiner_switch=0.6))
    assert len({tuple(j.key for j in gen.plan(run, s)[0]) for s in (base, on, switched)}) == 3
    canny = replace_section(base, "generate", controlnet="canny:tiny:controlnet-sdxl")
    assert [j.key for j in gen.plan(run, replace_section(canny, "generate", depth_model="x/y"))[0]] == \
        [j.key for j in gen.plan(run, canny)[0]]  # the depth model only counts for depth
    none = resolve(run.saved_settings(), overrides={"generate": {"prompt_weighting": "none", "refiner": "none"}})
    assert [j.key for j in gen.plan(run, none)[0]] == old


def test_a1111_syntax_is_read_as_a1111_reads_it() -> None:
    assert parse_a1111("a (cat:1.3) on a [mat]") == [("a ", 1.0), ("cat", 1.3), (" on a ", 1.0), ("mat", 1 / 1.1)]
    assert parse_a1111("((big)) dog") == [("big", pytest.approx(1.21)), (" dog", 1.0)]
    # A1111's own example: nested weights multiply
    assert parse_a1111("a (b [c] d:1.5) e") == [("a ", 1.0), ("b ", 1.5), ("c", pytest.approx(1.5 / 1.1)),
                                                (" d", 1.5), (" e", 1.0)]
    assert parse_a1111(r"\(literal\) x") == [("(literal) x", 1.0)]
    assert parse_a1111("(open") == [("open", pytest.approx(1.1))]  # unclosed: to the end
    assert parse_a1111("x:1.2) y, a:b") == [("x:1.2) y, a:b", 1.0)]  # no bracket: text
    assert parse_a1111("") == [("", 1.0)]


def test_a_long_weighted_prompt_is_encoded_whole() -> None:
    import torch

    from video2dream.models.painter import Painter

    painter = Painter("tiny:sdxl", device="cpu", dtype="fp32", prompt_weighting="a1111")
    tokens = sum(len(painter.pipe.tokenizer(text, add_special_tokens=False).input_ids)
                 for text, _ in parse_a1111(LONG))  # the words, without the weights' brackets
    assert 190 < tokens < 225
    with torch.inference_mode():
        whole = painter._encoder("base").pair(LONG, "")
        lighter = painter._encoder("base").pair(LONG.replace(":1.4)", ":1.0)"), "")
        tail = painter._encoder("base").pair(LONG[:-4] + "dawn", "")
        short = painter._encoder("base").pair("a red house", "")
        pe, ne, pp, _ = painter.pipe.encode_prompt("a red house", negative_prompt="", do_classifier_free_guidance=True)
    length = whole["prompt_embeds"].shape[1]
    assert length % 77 == 0 and length > tokens  # chunks of 77 holding every token: nothing cut
    assert whole["negative_prompt_embeds"].shape == whole["prompt_embeds"].shape
    assert not torch.equal(whole["prompt_embeds"], lighter["prompt_embeds"])  # the weight counts
    assert not torch.equal(whole["prompt_embeds"][:, -77:], tail["prompt_embeds"][:, -77:])  # and the last words
    # A short prompt without weights: exactly what diffusers' own encoding gives
    assert torch.equal(short["prompt_embeds"], pe) and torch.equal(short["pooled_prompt_embeds"], pp)
    assert torch.equal(short["negative_prompt_embeds"], ne)
    assert painter.token_limit(LONG)[1]  # the 77-token view still says what plain encoding would cut


def test_the_refiner_takes_over_the_base_latents_at_the_switch() -> None:
    from video2dream.errors import UserError
    from video2dream.models.painter import Painter

    painter = Painter("tiny:sdxl", device="cpu", dtype="fp32", refiner="tiny:sdxl-refiner")
    assert painter.refiner.vae is painter.pipe.vae and painter.refiner.text_encoder_2 is painter.pipe.text_encoder_2
    assert painter.refiner.text_encoder is None and painter.refiner.config.requires_aesthetics_score
    schedule = painter.pipe.scheduler.__class__.from_config(painter.pipe.scheduler.config)
    schedule.set_timesteps(4)
    everything = [int(t) for t in schedule.timesteps]
    painter.trace = []
    (image,) = painter.paint(["a lighthouse"], [""], [1], 64, 64, 4, 5.0, refiner_switch=0.5)
    assert image.size == (64, 64)
    base = [t for who, t in painter.trace if who == "base"]
    refined = [t for who, t in painter.trace if who == "refiner"]
    assert base == everything[:2] and refined == everything[2:]  # 4 steps, switch 0.5: two each
    assert min(base) >= 500 > max(refined)
    painter.trace = []
    painter.paint(["a lighthouse"], [""], [1], 64, 64, 4, 5.0, refiner_switch=0.8)
    assert [who for who, _ in painter.trace] == ["base"] * 3 + ["refiner"]
    with pytest.raises(UserError, match="no step"):
        painter.paint(["a lighthouse"], [""], [1], 64, 64, 1, 5.0, refiner_switch=0.5)


def square() -> Image.Image:
    im = Image.new("RGB", (64, 64), (20, 20, 20))
    ImageDraw.Draw(im).rectangle((16, 16, 47, 47), fill=(230, 230, 230))
    return im


def test_the_control_image_follows_the_frame() -> None:
    from video2dream.models.controlnet import DepthEstimator, canny, control_module

    edges = np.asarray(canny(square()))
    assert edges.shape == (64, 64, 3)
    ring = np.zeros((64, 64), bool)
    ring[14:50, 14:50] = True
    ring[19:45, 19:45] = False
    assert edges[ring].any() and not edges[~ring].any()  # edges at the square's sides, nowhere else
    depth = DepthEstimator("tiny:dpt", "cpu", None)(square().resize((80, 48)))
    assert depth.size == (80, 48) and depth.mode == "RGB"
    assert control_module("canny") == ("canny", "diffusers/controlnet-canny-sdxl-1.0")
    assert control_module("depth:tiny:x") == ("depth", "tiny:x") and control_module("a/b") == ("canny", "a/b")


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_missing_models_offline_are_one_line(plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(plain, run)
    before = snapshot(run)
    for option, words in [(("--refiner", "nobody/no-refiner"), ("SDXL refiner", "HF_HUB_OFFLINE")),
                          (("--controlnet", "canny"), ("ControlNet", "diffusers/controlnet-canny-sdxl-1.0")),
                          (("--controlnet", "depth:tiny:controlnet-sdxl"), ("depth model", "Intel/dpt-hybrid-midas"))]:
        capsys.readouterr()
        code = cli("generate", run, *option)
        one_line_error(code, capsys.readouterr().err, *words)
    assert snapshot(run) == before


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_the_telephone_paints_with_the_options(tmp_path: Path) -> None:
    square().save(tmp_path / "in.png")
    out = tmp_path / "chain"
    assert cli("telephone", tmp_path / "in.png", "-o", out, "--preset", "tiny", "--steps", "2",
               "--steps-per-image", "2", "--width", "64", "--height", "64", *REFINER, *WEIGHTED, *CONTROLNET) == 0
    text = parse_parameters(read_png_text(out / "step_002.png")["parameters"])
    assert text["Refiner"] == "tiny-sdxl-refiner" and text["ControlNet 0"].startswith("Module: canny")
    assert text["Telephone step"] == "2"


@pytest.mark.parametrize(("flags", "words"), [
    (("--prompt-weighting", "compel"), ("--prompt-weighting", "a1111, none")),
    (("--refiner-switch", "1.0"), ("--refiner-switch", "between 0 and 1")),
    (("--control-scale", "3"), ("--control-scale", "from 0 to 2")),
    (("--refiner", "a/b", "--controlnet", "canny", "--strength", "0.5"), ("--refiner", "--controlnet", "--strength")),
])
def test_bad_option_values_are_one_line(flags: tuple[str, ...], words: tuple[str, ...], plain: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    before = snapshot(plain)
    capsys.readouterr()
    one_line_error(cli("generate", plain, *flags), capsys.readouterr().err, *words)
    assert snapshot(plain) == before


def test_the_options_are_flags_of_run_and_telephone_and_go_back_to_none() -> None:
    from video2dream.cli import build_parser, command_flags, overrides
    from video2dream.settings import describe

    parser = build_parser()
    for command in ("generate", "run", "telephone"):
        assert {"generate.refiner", "generate.refiner_switch", "generate.prompt_weighting", "generate.controlnet",
                "generate.control_scale", "generate.depth_model"} <= set(command_flags(parser, command))
    on = resolve(overrides=overrides(parser.parse_args(["generate", "r", *REFINER, *WEIGHTED, *CONTROLNET])))
    assert (on.generate.refiner, on.generate.prompt_weighting, on.generate.controlnet) == (
        "tiny:sdxl-refiner", "a1111", "canny:tiny:controlnet-sdxl")
    off = resolve(saved=on.to_dict(), overrides=overrides(parser.parse_args([
        "generate", "r", "--refiner", "none", "--refiner-switch", "0.8", "--prompt-weighting", "none",
        "--controlnet", "none", "--control-scale", "0.5"])))
    assert describe(off) == []


def test_a_depth_controlnet_follows_its_frame_in_img2img() -> None:
    from video2dream.models.painter import Painter

    painter = Painter("tiny:sdxl", device="cpu", dtype="fp32", controlnet="depth:tiny:controlnet-sdxl",
                      depth_model="tiny:dpt")
    assert painter.control_module == "depth" and painter.depth is not None

    def paint(frame: Image.Image, scale: float) -> bytes:
        (im,) = painter.paint(["a lighthouse"], [""], [1], 64, 64, 2, 5.0, strength=0.7, init_images=[square()],
                              control_frames=[frame], control_scale=scale)
        return im.tobytes()

    flat = Image.new("RGB", (64, 64), (128, 128, 128))
    assert paint(square(), 1.0) == paint(square(), 1.0)  # the same frame: the same dream
    assert paint(square(), 1.0) != paint(flat, 1.0)  # another frame's depth: another dream
    assert paint(square(), 1.0) != paint(square(), 0.2)  # the weight counts
    assert type(painter.control_pipe(True)).__name__ == "StableDiffusionXLControlNetImg2ImgPipeline"
    assert painter.control_pipe(True).unet is painter.pipe.unet  # built from the loaded modules
