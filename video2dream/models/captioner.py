"""BLIP captions: load once, caption a batch of frames in one `generate` call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor
from transformers.utils import logging as hf_logging

from ..errors import SettingError, UserError
from . import hub
from .devices import pick_device, pick_dtype


@contextlib.contextmanager
def hushed_progress_bars() -> Iterator[None]:
    """transformers draws a bar for loading (and saving) every model's weights, even tiny ones.
    This also hides huggingface_hub's download bars: use it only where nothing is downloaded."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class Captioner:
    """A BLIP captioning model: a hub id, a local folder, or `tiny:blip`.

    `model`, `processor`, `device` and `dtype` are public: the interrogator hands them to
    clip-interrogator so that it never loads a caption model of its own.
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto") -> None:
        self.name = model
        self.device: torch.device = pick_device(device)
        self.dtype: torch.dtype = pick_dtype(dtype, self.device)
        if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
            # Otherwise from_pretrained takes it for a hub id and says so, confusingly.
            raise UserError(f"caption model folder '{model}' does not exist")
        local = hub.is_tiny(model) or Path(model).expanduser().is_dir()
        bars = hushed_progress_bars() if local else contextlib.nullcontext()
        with hub.loading("caption model", model), bars:
            path = hub.resolve(str(Path(model).expanduser()) if model.startswith("~") else model)
            self.processor: BlipProcessor = BlipProcessor.from_pretrained(path)
            self.model: BlipForConditionalGeneration = BlipForConditionalGeneration.from_pretrained(
                path, dtype=self.dtype
            )
        self.model.to(self.device).eval()

    @property
    def max_tokens(self) -> int:
        """The longest caption the model can write: its text decoder's positions."""
        return int(getattr(self.model.config.text_config, "max_position_embeddings", 512))

    def check_lengths(self, min_length: int, max_length: int) -> None:
        """Refuse, before any work (and before settings are saved), lengths the model cannot reach."""
        if max(min_length, max_length) > self.max_tokens:
            raise SettingError("interrogate.max_length",
                               f"{max_length} ({{interrogate.min_length}} {min_length}): {self.name} writes at most "
                               f"{self.max_tokens} tokens",
                               f"give {{interrogate.max_length}} {self.max_tokens} or less",
                               also=("interrogate.min_length",))

    def caption(
        self,
        images: list[Image.Image],
        min_length: int = 30,
        max_length: int = 100,
        num_beams: int = 5,
        no_repeat_ngram_size: int = 2,
    ) -> list[str]:
        """One caption per image, in order. Lengths count BLIP tokens, its start token included."""
        if not images:
            return []
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            tokens = self.model.generate(
                pixel_values=pixel_values,
                min_length=min_length,
                max_length=max_length,
                num_beams=num_beams,
                no_repeat_ngram_size=no_repeat_ngram_size,
            )
        texts = self.processor.batch_decode(tokens, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]
