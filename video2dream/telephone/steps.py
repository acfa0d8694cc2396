"""One step of a chain: its row (caption, prompt, seed), its name and seed, and its PNG (step 0: the
input as the chain saw it; step k: a paint unit, committed with the generate stage's A1111 writer).

A step's PNG is committed twice: once painted, its caption still to come (caption null in its row),
then with the caption its caption unit made from that PNG. A step left uncaptioned by a killed
command is captioned by the next one, never painted again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import Settings
from ..units import Unit

if TYPE_CHECKING:
    from PIL import Image

CHUNK = "video2dream-telephone"  # a step PNG's row and the chain key, as JSON


@dataclass
class Step:
    step: int
    image: str
    caption: str | None  # None: painted, not captioned yet
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    clip_to_original: float | None = None
    clip_to_previous: float | None = None
    caption_to_previous: float | None = None
    repeats_step: int | None = None

    def chunk(self, key: str) -> str:
        data = {"key": key, "step": self.step, "caption": self.caption, "prompt": self.prompt,
                "negative_prompt": self.negative_prompt, "seed": self.seed}
        return json.dumps(data, ensure_ascii=False)


def step_name(k: int) -> str:
    return f"step_{k:03d}.png"


def seed_for(settings: Settings, k: int) -> int:
    from ..units import seed_for

    return seed_for(settings.generate, k)  # the generate stage's rule, with the step for the frame


def normalised(caption: str) -> str:
    return " ".join(caption.lower().split())


def repeats(captions: Sequence[str], caption: str) -> int | None:
    """The first earlier step whose caption is this one (case and spacing aside)."""
    want = normalised(caption)
    return next((j for j, c in enumerate(captions) if normalised(c) == want), None)


def read_step(path: Path, key: str, k: int) -> Step | None:
    """The row a step PNG carries, if it belongs to this chain (key) at this place (k)."""
    from ..pngmeta import read_png_text

    try:
        data = json.loads(read_png_text(path)[CHUNK])
    except (OSError, ValueError, KeyError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("step") != k:
        return None
    caption = data.get("caption", "")
    return Step(k, path.name, None if caption is None else str(caption), str(data.get("prompt", "")),
                str(data.get("negative_prompt", "")), data.get("seed"))


def save_step(root: Path, image: Image.Image, row: Step, key: str, parameters: str | None) -> None:
    """Write a step's PNG with its row and the chain's key, atomically. parameters: its A1111 text
    (the generate stage's); None for step 0, the input as the chain saw it (nothing was painted)."""
    from PIL.PngImagePlugin import PngInfo

    from ..pngmeta import save_png
    from ..runfolder import atomic_path

    if parameters is not None:
        save_png(image, root / row.image, parameters, {CHUNK: row.chunk(key)})
        return
    info = PngInfo()
    info.add_itxt(CHUNK, row.chunk(key))
    with atomic_path(root / row.image) as tmp:
        image.save(tmp, format="PNG", pnginfo=info, compress_level=4)


def caption_unit(settings: Settings, row: Step, key: str) -> Unit:
    """Step k's caption unit: its own PNG, captioned with the chain's interrogate settings (whose
    mode is the telephone's); its prompt and negative prompt are the next step's."""
    from ..units import caption_params

    return Unit(row.image, "caption", (row.image,), caption_params(settings.interrogate), key)


def paint_unit(settings: Settings, k: int, prompt: str, negative: str, size: tuple[int, int], key: str) -> Unit:
    """Step k's paint unit: the generate stage's seed rule and negative prompt, the step before as
    img2img's init picture."""
    from ..units import merge_negative, needs_source, paint_params, painter_options, seed_for

    g = settings.generate
    params = paint_params(prompt, merge_negative(negative, g), seed_for(g, k), size, g.steps, g.guidance,
                          g.strength, g.lora, leading={"Telephone step": k}, options=painter_options(g))
    # img2img starts from the step before, and ControlNet follows it: the chain's only source
    return Unit(step_name(k), "paint", (step_name(k - 1),) if needs_source(g) else (), params, key)

