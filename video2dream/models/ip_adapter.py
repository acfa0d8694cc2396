"""The style image: an IP-Adapter for SDXL, loaded through diffusers' own `pipe.load_ip_adapter`
(an adapter id or folder holding SUBFOLDER/WEIGHT and SUBFOLDER/image_encoder, as h94/IP-Adapter's
sdxl_models/ip-adapter_sdxl.safetensors). Every dream's cross-attention also attends to the image's
CLIP embedding, weighted by --style-image-scale.

`tiny:ip-adapter` is a tiny randomly initialised one of the real layout (a CLIPVisionModelWithProjection
saved with save_pretrained, and the adapter's safetensors with `image_proj.*` and `ip_adapter.N.to_k_ip`
/ `to_v_ip` weights for each cross-attention layer of the tiny SDXL UNet), for tests and dry runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import hub

SEED = 5
TINY_SUBFOLDER = "sdxl_models"
TINY_WEIGHT = "ip-adapter_sdxl.safetensors"
IMAGE_TOKENS = 4  # the plain IP-Adapter's image tokens (diffusers' ImageProjection)


def load_ip_adapter(pipe: Any, adapter: str, subfolder: str, weight: str) -> None:
    """Load the adapter (and its image encoder) into pipe; one clear line when it cannot be."""
    from .painter import _hushed_load_bars, _offline_quiet

    local = hub.is_tiny(adapter) or Path(adapter).expanduser().exists()
    with hub.loading("IP-Adapter", adapter), _hushed_load_bars(local), _offline_quiet():
        pipe.load_ip_adapter(hub.resolve(adapter), subfolder=subfolder, weight_name=weight)


def cross_attention_layers(unet: Any) -> list[tuple[str, int]]:
    """(name, hidden size) of each cross-attention processor, in the order diffusers numbers the
    adapter's `ip_adapter.{1,3,5...}` weights (UNet2DConditionModel._convert_ip_adapter_attn_to_diffusers)."""
    out = []
    channels = list(unet.config.block_out_channels)
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        out.append((name, hidden))
    return out


def build_tiny_ip_adapter(dest: Path) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(dest) / TINY_SUBFOLDER
    torch.manual_seed(SEED)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, projection_dim=32, num_hidden_layers=2,
                              num_attention_heads=4, image_size=32, patch_size=8)
    CLIPVisionModelWithProjection(config).save_pretrained(folder / "image_encoder")
    unet = UNet2DConditionModel.from_pretrained(hub.tiny_model_dir("tiny:sdxl"), subfolder="unet")
    width = unet.config.cross_attention_dim
    generator = torch.Generator().manual_seed(SEED)

    def weight(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    tensors = {"image_proj.proj.weight": weight(IMAGE_TOKENS * width, config.projection_dim),
               "image_proj.proj.bias": torch.zeros(IMAGE_TOKENS * width),
               "image_proj.norm.weight": torch.ones(width), "image_proj.norm.bias": torch.zeros(width)}
    for i, (_name, hidden) in enumerate(cross_attention_layers(unet)):
        tensors[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = weight(hidden, width)
        tensors[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = weight(hidden, width)
    save_file(tensors, str(folder / TINY_WEIGHT))
