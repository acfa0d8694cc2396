"""Tiny randomly initialised BLIP and open_clip CLIP models, of the real architectures.

They exist so that tests and the `tiny` preset run the whole code path (from_pretrained, open_clip's
factory, generate, label tables) in seconds on a CPU without the hub. Weights are random but
deterministic: the same seed gives the same files, so cached results stay comparable.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SEED = 1234

# open_clip registers a config under its file's stem; the interrogator looks for this file.
CLIP_CONFIG_FILE = "tiny-clip.json"
CLIP_WEIGHTS_FILE = "open_clip_model.safetensors"

TINY_CLIP_CFG: dict = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    # vocab 49408: open_clip's shipped SimpleTokenizer (BPE). Context 32, not 77: every label fits
    # (the longest is 28 tokens) and the ~110k label embeddings are computed 2-3x faster.
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

# Caption-like words, so that the gibberish captions of random weights at least look like words.
_WORDS_TEXT = """
a an the of in on at with and or to from by for over under near behind above below into through
is are was were be being has have standing sitting walking running lying looking holding wearing
riding playing eating flying swimming smiling talking waiting reading jumping driving painting
man woman person people boy girl child children baby men women group crowd family couple friends
dog cat horse bird cow sheep fish bear elephant giraffe zebra animal animals duck lion tiger
car truck bus train bike bicycle motorcycle boat plane airplane road street city town building
house room kitchen table chair bed couch window door wall floor roof sign light lights lamp
tree trees grass field park garden forest mountain mountains hill sky cloud clouds sun moon
water river lake sea ocean beach sand snow rain night day morning evening sunset sunrise
red blue green yellow white black brown orange pink purple gray grey dark bright colorful
big small large little tall long short old young new open empty full wooden metal glass
one two three four five several many some front back top side middle left right close up
picture photo image painting drawing view scene background foreground shot portrait landscape
food plate bowl cup pizza cake bread fruit banana apple orange sandwich coffee tea bottle
book phone computer screen television camera clock shirt hat dress jacket bag umbrella ball
game team player players stage music guitar piano video film movie art pattern line lines
stone rock rocks fire smoke dust shadow shadows reflection glass mirror frame box boxes
"""
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# BLIP's decoder starts from [DEC]; [ENC] is its encoder's token (as in Salesforce's tokenizer).
_BLIP_EXTRA = ["[DEC]", "[ENC]"]


def _blip_vocab() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    punct = list(".,!?'\"-:;()")
    # Deduplicated, in order: a vocab must not list a token twice.
    words = list(dict.fromkeys(w for w in _WORDS_TEXT.split() if w not in letters))
    pieces = [f"##{c}" for c in letters + digits]
    return _SPECIALS + punct + digits + letters + words + pieces + _BLIP_EXTRA


def build_tiny_blip(dest: Path) -> None:
    """A tiny BlipForConditionalGeneration + BlipProcessor, saved with save_pretrained into dest."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    dest = Path(dest)
    vocab = _blip_vocab()
    (dest / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    ids = {tok: i for i, tok in enumerate(vocab)}
    image_size = 64
    text_config = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "encoder_hidden_size": 32,  # = vision hidden_size: the decoder cross-attends to it
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 512,
        "initializer_range": 0.3,  # large, so that different images get different captions
        # generate() starts from bos, stops on sep and pads with pad (see modeling_blip.generate).
        "bos_token_id": ids["[DEC]"],
        "sep_token_id": ids["[SEP]"],
        "eos_token_id": ids["[SEP]"],
        "pad_token_id": ids["[PAD]"],
    }
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": 16,
        "initializer_range": 0.02,  # the default (1e-10) would make every image look the same
    }
    config = BlipConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=32,
        image_text_hidden_size=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = BlipForConditionalGeneration(config).eval()
        # Random weights like to emit special tokens, which decode to "" once stripped; forbid
        # them through the LM head's bias so that captions have words. [SEP] (the end) gets a
        # push instead, so captions end soon after min_length rather than always at max_length.
        with torch.no_grad():
            bias = model.text_decoder.cls.predictions.bias
            for tok in ("[PAD]", "[UNK]", "[CLS]", "[MASK]", "[DEC]", "[ENC]"):
                bias[ids[tok]] = -1e4
            bias[ids["[SEP]"]] = 5.0
    from .captioner import hushed_progress_bars

    with hushed_progress_bars():
        model.save_pretrained(dest)

    tokenizer = BertTokenizer(
        vocab=str(dest / "vocab.txt"),
        do_lower_case=True,
        bos_token="[DEC]",
        additional_special_tokens=["[ENC]"],
        model_max_length=512,
    )
    image_processor = BlipImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True,
    )
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)


def build_tiny_clip(dest: Path) -> None:
    """A tiny open_clip CLIP: `tiny-clip.json` (open_clip's model config format) + safetensors."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    dest = Path(dest)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = CLIP(**json.loads(json.dumps(TINY_CLIP_CFG)))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(dest / CLIP_WEIGHTS_FILE))
    (dest / CLIP_CONFIG_FILE).write_text(json.dumps(TINY_CLIP_CFG, indent=2) + "\n")
    # Also the hub layout, so `local-dir:<dest>` works with open_clip directly.
    hub_cfg = {"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}
    (dest / "open_clip_config.json").write_text(json.dumps(hub_cfg, indent=2) + "\n")
