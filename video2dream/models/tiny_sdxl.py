"""A tiny randomly initialised SDXL pipeline of the real architecture, for tests and dry runs.

Same classes and folder layout as stabilityai/stable-diffusion-xl-base-1.0 (two CLIP text encoders
whose hidden sizes add up to the UNet's cross-attention width, "text_time" added conditioning, an
8x VAE, Euler with SDXL's schedule), scaled down so a 256x256 image takes a fraction of a second on
a CPU. The tokenizers are the real CLIP BPE vocabulary (shipped inside open_clip), so prompts are
cut at 77 tokens exactly where the real model cuts them.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from pathlib import Path
from typing import Any

SEED = 0
CLIP_VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# stabilityai/stable-diffusion-xl-base-1.0/scheduler/scheduler_config.json
SDXL_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "timestep_spacing": "leading",
    "steps_offset": 1,
}
# Keys of that file that Euler ignores but other schedulers read after a swap (DDIM would clip
# samples and set alpha to one by default).
SDXL_SCHEDULER_EXTRA = {
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "sample_max_value": 1.0,
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map of the 256 bytes to printable characters (in CLIP's order)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and BPE merges, built from open_clip's bpe_simple_vocab_16e6.txt.gz the way
    CLIP's SimpleTokenizer builds them: 256 byte characters, their '</w>' variants, one token per
    merge, then the two special tokens (49408 in all)."""
    import open_clip

    bpe = Path(open_clip.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(bpe) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS, EOS]
    assert len(tokens) == CLIP_VOCAB_SIZE, len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def _write_hub_tokenizer_files(folder: Path, vocab: dict[str, int],
                               merges: list[tuple[str, str]]) -> None:
    """vocab.json + merges.txt as the hub's SDXL tokenizer folders have them, next to the
    tokenizer.json that save_pretrained writes (older transformers read these two)."""
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    (folder / "merges.txt").write_text(text, encoding="utf-8")


def build_tiny_sdxl(dest: Path) -> None:
    """Fill the empty folder dest with a tiny SDXL pipeline: the same weights every time."""
    import torch
    from diffusers import (
        AutoencoderKL,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    dest = Path(dest)
    text_hidden = 32  # per encoder; the UNet attends to both, concatenated (like SDXL's 768 + 1280)
    pooled_dim = 32  # text_encoder_2's projection: the pooled embedding added to the time embedding
    time_embed_dim = 8  # per number in add_time_ids (SDXL: 256); there are 6 of them

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=32,  # latents 32x32 -> 256x256 images by default
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        cross_attention_dim=2 * text_hidden,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + pooled_dim,
    )

    torch.manual_seed(SEED)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,  # four blocks: 8x down, as in SDXL's VAE
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=256,
        scaling_factor=0.13025,  # SDXL's
        force_upcast=True,
    )

    def text_config(act: str) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=text_hidden,
            intermediate_size=37,
            num_hidden_layers=2,  # SDXL reads the penultimate layer, so at least two
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act=act,
            projection_dim=pooled_dim,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=1,
        )

    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(text_config("quick_gelu"))  # CLIP ViT-L's text tower
    torch.manual_seed(SEED + 1)
    text_encoder_2 = CLIPTextModelWithProjection(text_config("gelu"))  # OpenCLIP bigG's

    save_sdxl(dest, unet, vae, text_encoder, text_encoder_2)


def save_sdxl(dest: Path, unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any,
              dtype: Any = None) -> None:
    """Save SDXL components as the hub lays them out, with SDXL's scheduler and CLIP tokenizers."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer
    from transformers.utils import logging as hf_logging

    vocab, merges = clip_vocab_and_merges()
    # SDXL's second tokenizer pads with "!" rather than <|endoftext|>; keep that difference.
    tokenizers = [
        CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad, model_max_length=77)
        for pad in (EOS, "!")
    ]
    scheduler = EulerDiscreteScheduler(**SDXL_SCHEDULER)
    scheduler.register_to_config(**SDXL_SCHEDULER_EXTRA)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1],
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    if dtype is not None:
        pipe.to(dtype)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bars
    try:
        pipe.save_pretrained(dest)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for sub in ("tokenizer", "tokenizer_2"):
        _write_hub_tokenizer_files(Path(dest) / sub, vocab, merges)


def build_tiny_taesdxl(dest: Path) -> None:
    """A tiny AutoencoderTiny (TAESD's architecture, as madebyollin/taesdxl), for --preview-vae."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(SEED)
    tae = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8),
                          decoder_block_out_channels=(8, 8, 8, 8),
                          num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
                          latent_channels=4)
    tae.save_pretrained(Path(dest))


def _no_bars() -> contextlib.AbstractContextManager:
    """No "Loading weights" / "Writing model shards" bars while a tiny model is built."""
    from .painter import _hushed_load_bars

    return _hushed_load_bars(True)


def _tiny_sdxl_parts() -> dict[str, Any]:
    """The tiny base's second text encoder, its tokenizer and its VAE: the refiner shares them, as
    stabilityai's refiner shares the base's OpenCLIP bigG encoder and VAE."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    from .hub import tiny_model_dir

    base = tiny_model_dir("tiny:sdxl")
    with _no_bars():
        return {"text_encoder_2": CLIPTextModelWithProjection.from_pretrained(base / "text_encoder_2"),
                "tokenizer_2": CLIPTokenizer.from_pretrained(base / "tokenizer_2"),
                "vae": AutoencoderKL.from_pretrained(base / "vae")}


def build_tiny_refiner(dest: Path) -> None:
    """A tiny SDXL refiner (stabilityai/stable-diffusion-xl-refiner-1.0's architecture): an img2img
    pipeline with only the second text encoder, aesthetic-score conditioning (5 added time ids
    instead of 6) and a UNet that attends to text_encoder_2's states alone."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel

    parts = _tiny_sdxl_parts()
    text_hidden = parts["text_encoder_2"].config.hidden_size  # 32 (the real refiner: 1280)
    pooled_dim = parts["text_encoder_2"].config.projection_dim
    time_embed_dim = 8
    torch.manual_seed(SEED + 2)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        attention_head_dim=(2, 4), transformer_layers_per_block=(1, 1), use_linear_projection=True,
        cross_attention_dim=text_hidden,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        # original size (2) + crop (2) + aesthetic score (1): the refiner's 5 * 256 + 1280 = 2560
        projection_class_embeddings_input_dim=5 * time_embed_dim + pooled_dim,
    )
    scheduler = EulerDiscreteScheduler(**SDXL_SCHEDULER)
    scheduler.register_to_config(**SDXL_SCHEDULER_EXTRA)
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=parts["vae"], text_encoder=None, text_encoder_2=parts["text_encoder_2"], tokenizer=None,
        tokenizer_2=parts["tokenizer_2"], unet=unet, scheduler=scheduler,
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False, add_watermarker=False)
    with _no_bars():
        pipe.save_pretrained(dest)
    vocab, merges = clip_vocab_and_merges()
    _write_hub_tokenizer_files(Path(dest) / "tokenizer_2", vocab, merges)


def build_tiny_controlnet(dest: Path) -> None:
    """A tiny SDXL ControlNet: ControlNetModel.from_unet of the tiny base's UNet, as ControlNets are
    trained from their base. Its zero convolutions (zero when trained from scratch, so that a new
    ControlNet changes nothing) get small random weights here, so that the control image shows."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from .hub import tiny_model_dir

    with _no_bars():
        unet = UNet2DConditionModel.from_pretrained(tiny_model_dir("tiny:sdxl") / "unet")
    torch.manual_seed(SEED + 3)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    zero_convs = [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=0.3)
            torch.nn.init.zeros_(conv.bias)
    with _no_bars():
        net.save_pretrained(Path(dest))


def build_tiny_dpt(dest: Path) -> None:
    """A tiny DPT depth estimator (Intel/dpt-hybrid-midas's family, without the hybrid backbone),
    with its image processor: loads through AutoModelForDepthEstimation like the real ones."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=37, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 32],
                       fusion_hidden_size=16, head_in_index=-1, is_hybrid=False, reassemble_factors=[4, 2, 1, 0.5])
    torch.manual_seed(SEED + 4)
    with _no_bars():
        DPTForDepthEstimation(config).eval().save_pretrained(Path(dest))
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False).save_pretrained(Path(dest))
