"""A tiny randomly initialised SDXL pipeline of the real architecture, for tests and dry runs.

Same classes and folder layout as stabilityai/stable-diffusion-xl-base-1.0 (two CLIP text encoders
whose hidden sizes add up to the UNet's cross-attention width, "text_time" added conditioning, an
8x VAE, Euler with SDXL's schedule), scaled down so a 256x256 image takes a fraction of a second on
a CPU. The tokenizers are the real CLIP BPE vocabulary (shipped inside open_clip), so prompts are
cut at 77 tokens exactly where the real model cuts them.
"""

from __future__ import annotations

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
