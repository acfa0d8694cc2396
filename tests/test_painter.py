"""The SDXL painter, on the tiny randomly initialised SDXL of the real architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from video2dream.errors import UserError
from video2dream.models import hub
from video2dream.models.painter import Painter, generation_size, parse_lora
from video2dream.models.tiny_sdxl import build_tiny_sdxl

pytestmark = pytest.mark.slow

SIZE = 128  # latents 16x16: a few tens of milliseconds per image


@pytest.fixture(scope="module")
def painter() -> Painter:
    return Painter("tiny:sdxl")


def paint(p: Painter, prompts: list[str], seeds: list[int], size: tuple[int, int] = (SIZE, SIZE),
          **kw: object) -> list[np.ndarray]:
    w, h = size
    images = p.paint(prompts, [""] * len(prompts), seeds, w, h, 4, 6.0, **kw)  # type: ignore[arg-type]
    return [np.asarray(im) for im in images]


# -- the tiny model ------------------------------------------------------------------------------


def _weights(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    out: dict[str, object] = {}
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder).as_posix()
        if f.suffix == ".safetensors":
            out.update({f"{rel}:{k}": v for k, v in load_file(f).items()})
        elif f.suffix in (".json", ".txt"):
            out[rel] = f.read_text(encoding="utf-8")
    return out


def test_build_is_deterministic(tmp_path: Path) -> None:
    build_tiny_sdxl(tmp_path / "a")
    build_tiny_sdxl(tmp_path / "b")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, str):
            assert value == b[key], key
        else:
            assert value.dtype == b[key].dtype and bool((value == b[key]).all()), key  # type: ignore[attr-defined]


def test_folder_looks_like_the_hubs() -> None:
    folder = hub.tiny_model_dir("tiny:sdxl")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                "scheduler"):
        assert (folder / sub).is_dir(), sub
    unet = json.loads((folder / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time" and unet["cross_attention_dim"] == 64
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "EulerDiscreteScheduler"
    assert sched["timestep_spacing"] == "leading" and sched["steps_offset"] == 1
    assert len(json.loads((folder / "tokenizer" / "vocab.json").read_text())) == 49408


def test_tokenizers_are_clips(painter: Painter) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    clip = SimpleTokenizer()
    for text in ("a photo of a cat, trending on artstation", "Crème brûlée — 日本語 🐱 it's  LOUD"):
        want = [49406, *clip.encode(text), 49407]
        assert painter.pipe.tokenizer(text).input_ids == want
        assert painter.pipe.tokenizer_2(text).input_ids == want
    # SDXL's second tokenizer pads with "!", a special token then, so "!!" is two "!" (as in SDXL).
    assert painter.pipe.tokenizer("wow!!").input_ids == [49406, *clip.encode("wow!!"), 49407]
    assert painter.pipe.tokenizer_2("wow!!").input_ids[-3:] == [0, 0, 49407]


# -- loading -------------------------------------------------------------------------------------


def test_names(painter: Painter) -> None:
    assert painter.model_name == "tiny-sdxl"
    assert painter.sampler_name == "Euler"


def test_load_from_local_folder_gives_the_same_images(painter: Painter) -> None:
    folder = hub.tiny_model_dir("tiny:sdxl")
    local = Painter(str(folder))
    assert local.model_name == folder.name
    assert np.array_equal(paint(local, ["a cat"], [3])[0], paint(painter, ["a cat"], [3])[0])


@pytest.mark.parametrize("name", ["nobody/no-such-model", "/no/such/folder/anywhere"])
def test_unknown_model_is_a_user_error(name: str) -> None:
    with pytest.raises(UserError, match="cannot load SDXL model"):
        Painter(name)


# -- txt2img -------------------------------------------------------------------------------------


def test_images_have_the_requested_size(painter: Painter) -> None:
    assert paint(painter, ["a cat"], [1], size=(256, 256))[0].shape == (256, 256, 3)
    images = painter.paint(["a", "b"], ["", "ugly"], [1, 2], 192, 128, 2, 5.0)
    assert [im.size for im in images] == [(192, 128)] * 2
    assert all(im.mode == "RGB" for im in images)


def test_same_seed_same_pixels_other_seed_other_pixels(painter: Painter) -> None:
    a, b, c = (paint(painter, ["a cat"], [s])[0] for s in (7, 7, 8))
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 5


def test_a_frame_does_not_depend_on_its_batch(painter: Painter) -> None:
    """Each image has its own CPU generator, so the noise is the same alone or in a batch. The
    pixels may still differ by one level here and there: matrix kernels sum in a different order
    for different batch sizes (on CPUs and GPUs alike), which no seed can fix."""
    alone = paint(painter, ["a cat"], [42])[0].astype(int)
    batch = paint(painter, ["a dog", "a cat", "a tree"], [1, 42, 2])
    diff = np.abs(alone - batch[1])
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    other = np.abs(alone - batch[0]).mean()
    assert other > 5  # its neighbours really are other pictures


def test_noise_is_per_image(painter: Painter) -> None:
    """The starting latents of a frame are bit-identical alone and in a batch."""
    import torch

    def noise(seeds: list[int]) -> torch.Tensor:
        return painter.pipe.prepare_latents(
            len(seeds), 4, SIZE, SIZE, torch.float32, torch.device("cpu"),
            [torch.Generator("cpu").manual_seed(s) for s in seeds])

    assert torch.equal(noise([42])[0], noise([1, 42, 2])[1])


def test_bad_batch_arguments(painter: Painter) -> None:
    with pytest.raises(ValueError):
        painter.paint(["a", "b"], [""], [1, 2], SIZE, SIZE, 2, 5.0)
    with pytest.raises(UserError):
        painter.paint(["a"], [""], [1], 100, SIZE, 2, 5.0)


# -- img2img -------------------------------------------------------------------------------------


def test_img2img_shares_the_loaded_modules(painter: Painter) -> None:
    frame = Image.radial_gradient("L").convert("RGB").resize((320, 240))  # resized to 128x128
    a = paint(painter, ["a cat"], [5], strength=0.5, init_images=[frame])[0]
    assert a.shape == (SIZE, SIZE, 3)
    img2img = painter.img2img
    assert img2img.unet is painter.pipe.unet and img2img.vae is painter.pipe.vae
    assert img2img.text_encoder_2 is painter.pipe.text_encoder_2
    assert painter.img2img is img2img  # made once
    again = paint(painter, ["a dog", "a cat"], [1, 5], strength=0.5, init_images=[frame, frame])
    assert np.abs(a.astype(int) - again[1]).max() <= 2
    light = paint(painter, ["a cat"], [5], strength=0.25, init_images=[frame])[0]
    source = np.asarray(frame.resize((SIZE, SIZE)), dtype=int)
    # Less strength stays closer to the frame.
    assert np.abs(light - source).mean() < np.abs(a.astype(int) - source).mean()


def test_img2img_refuses_zero_denoising_steps(painter: Painter) -> None:
    frame = Image.new("RGB", (SIZE, SIZE), "gray")
    with pytest.raises(UserError, match="at least 10 steps"):
        painter.paint(["a"], [""], [1], SIZE, SIZE, 4, 5.0, strength=0.1, init_images=[frame])


# -- schedulers ----------------------------------------------------------------------------------


def test_scheduler_by_class_name() -> None:
    p = Painter("tiny:sdxl", scheduler="EulerAncestralDiscreteScheduler")
    assert type(p.pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert p.pipe.scheduler.config.timestep_spacing == "leading"  # SDXL's config carried over
    assert p.sampler_name == "Euler a"
    a, b = paint(p, ["a cat"], [9]), paint(p, ["a cat"], [9])
    assert np.array_equal(a[0], b[0])  # ancestral noise comes from the per-image generator too


@pytest.mark.parametrize(("name", "cls", "sampler"), [
    ("DPMSolverMultistepScheduler", "DPMSolverMultistepScheduler", "DPM++ 2M"),
    ("DDIMScheduler", "DDIMScheduler", "DDIM"),
    ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", "DPM++ 2M Karras"),
    ("Euler a", "EulerAncestralDiscreteScheduler", "Euler a"),
])
def test_scheduler_names(painter: Painter, name: str, cls: str, sampler: str) -> None:
    original = painter.pipe.scheduler
    try:
        painter.pipe.scheduler = painter._make_scheduler(painter.pipe, name)
        assert type(painter.pipe.scheduler).__name__ == cls
        assert painter.sampler_name == sampler
        assert paint(painter, ["a cat"], [1])[0].shape == (SIZE, SIZE, 3)
    finally:
        painter.pipe.scheduler = original


def test_unknown_scheduler_is_a_user_error(painter: Painter) -> None:
    with pytest.raises(UserError, match="EulerAncestralDiscreteScheduler") as e:
        painter._make_scheduler(painter.pipe, "NoSuchScheduler")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="unknown scheduler"):
        painter._make_scheduler(painter.pipe, "AutoencoderKL")  # a diffusers class, not a scheduler
    with pytest.raises(UserError, match="unknown scheduler 'Euler b'"):
        Painter("tiny:sdxl", scheduler="Euler b")  # refused before the model loads


# -- LoRA ----------------------------------------------------------------------------------------


def test_parse_lora() -> None:
    assert parse_lora("ostris/detail:0.6") == ("ostris/detail", 0.6)
    assert parse_lora("loras/x.safetensors") == ("loras/x.safetensors", 1.0)
    assert parse_lora("C:\\loras\\x.safetensors") == ("C:\\loras\\x.safetensors", 1.0)
    assert parse_lora("C:\\loras\\x.safetensors:0.5") == ("C:\\loras\\x.safetensors", 0.5)


def test_missing_lora_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        Painter("tiny:sdxl", lora=f"{tmp_path / 'none.safetensors'}:0.7")
    assert "\n" not in str(e.value)


def test_lora_file_is_fused(tmp_path: Path, painter: Painter) -> None:
    pytest.importorskip("peft")
    import torch
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    maker = Painter("tiny:sdxl")
    unet = maker.pipe.unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    with torch.no_grad():  # gaussian init leaves B at zero; make the LoRA do something
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    StableDiffusionXLPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=get_peft_model_state_dict(unet), weight_name="tiny.safetensors")
    lora = tmp_path / "tiny.safetensors"
    with_lora = Painter("tiny:sdxl", lora=f"{lora}:0.8")
    assert with_lora.lora == (str(lora), 0.8)
    plain = paint(painter, ["a cat"], [1])[0].astype(int)
    assert np.abs(paint(with_lora, ["a cat"], [1])[0] - plain).mean() > 1
    assert np.array_equal(paint(Painter("tiny:sdxl", lora=f"{lora}:0"), ["a cat"], [1])[0], plain)


# -- prompt length and sizes ---------------------------------------------------------------------


def test_token_limit(painter: Painter) -> None:
    short = "a cat, sitting on a mat"
    assert painter.token_limit(short) == (short, "")
    words = [f"word{i % 50}" for i in range(200)]
    prompt = ", ".join(words)
    kept, cut = painter.token_limit(prompt)
    assert kept + cut == prompt and cut
    tok = painter.pipe.tokenizer
    assert len(tok(kept, add_special_tokens=False).input_ids) == 75
    # What the pipeline gives the encoders is exactly the kept part.
    full = tok(prompt, max_length=77, truncation=True, padding="max_length").input_ids
    assert full == tok(kept, max_length=77, truncation=True, padding="max_length").input_ids


def test_token_limit_with_unicode(painter: Painter) -> None:
    prompt = " ".join(["日本語の猫 🐱 crème"] * 40)
    kept, cut = painter.token_limit(prompt)
    assert kept + cut == prompt and cut
    assert 70 <= len(painter.pipe.tokenizer(kept, add_special_tokens=False).input_ids) <= 75


@pytest.mark.parametrize(("src", "want"), [
    ((1920, 1080), (1344, 768)),
    ((1280, 720), (1344, 768)),
    ((640, 480), (1152, 896)),
    ((1080, 1920), (768, 1344)),
    ((480, 640), (896, 1152)),
    ((1000, 1000), (1024, 1024)),
])
def test_generation_size_sdxl(src: tuple[int, int], want: tuple[int, int]) -> None:
    assert generation_size(*src) == want


def test_generation_size_small_and_odd() -> None:
    assert generation_size(1920, 1080, pixels=256 * 256) == (320, 192)
    w, h = generation_size(1920, 1080, pixels=128 * 128, multiple=8)
    assert (w % 8, h % 8) == (0, 0) and abs(w / h - 16 / 9) < 0.1
    assert generation_size(4000, 10, pixels=64 * 64)[1] == 64  # never below one multiple
    assert generation_size(4000, 10, pixels=512 * 512) == (1024, 256)  # at most 4:1 (MAX_ASPECT)
    with pytest.raises(ValueError):
        generation_size(0, 10)
