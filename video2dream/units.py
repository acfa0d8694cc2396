"""Units of work: what one model call makes for one frame (or one telephone step), as plain data.

A model stage is three parts (see README, "Architecture"):
  plan     reads the run folder and the settings and returns the units that are not current
           (fast; no model is loaded);
  execute  a backend (video2dream.backends) runs the units wherever the models are and yields their
           results batch by batch (the only part that touches a model);
  commit   writes one result into the run folder (temp name, rename, key): the only part that writes.

A Unit is plain data: picklable (for a worker process or a cluster) and JSON-able (for a journal).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from .tables import FRAME_NAME

if TYPE_CHECKING:
    from .settings import GenerateSettings, InterrogateSettings

KINDS = ("caption", "paint", "morph")
STEP_NAME = re.compile(r"step_[0-9]{3,}\.png")  # a telephone chain's step picture
# A frame's candidate of `generate --variants` (000012_01.png: frame 12's first), painted into variants/
VARIANT_NAME = re.compile(r"[0-9]{6,}_[0-9]{2,}\.png")
# An in-between: its two keyframes' numbers and its place in their gap (000001-000002_01.png)
MORPH_NAME = re.compile(r"(?P<a>[0-9]{6,})-(?P<b>[0-9]{6,})_(?P<k>[0-9]{2,})\.png")


@dataclass
class Unit:
    name: str  # the frame's (or telephone step's) file name: what commit writes
    kind: str  # "caption" (a frame -> caption, prompt, negative prompt), "paint" (a prompt -> a picture)
    # or "morph" (two keyframes' prompts and seeds, and t -> the picture between them)
    inputs: tuple[str, ...] = ()  # pictures it reads, relative to the run folder ("frames/000001.png")
    params: dict[str, Any] = field(default_factory=dict)  # prompt, seed, size, ... (JSON values)
    key: str = ""  # what the written result carries, so that a later plan knows it is current

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unit kind {self.kind!r}: one of {', '.join(KINDS)}")
        if self.kind == "morph":
            if not MORPH_NAME.fullmatch(self.name):
                raise ValueError(f"morph unit name {self.name!r} is not an in-between's (000001-000002_01.png)")
        elif not (FRAME_NAME.fullmatch(self.name) or STEP_NAME.fullmatch(self.name)
                  or (self.kind == "paint" and VARIANT_NAME.fullmatch(self.name))):
            raise ValueError(f"unit name {self.name!r} is neither a frame's, a variant's nor a telephone step's")
        self.inputs = tuple(self.inputs)
        for p in self.inputs:
            path = PurePosixPath(p)
            if not p or "\\" in p or path.is_absolute() or ".." in path.parts:
                raise ValueError(f"unit input {p!r} is not a path inside the run folder")
        try:
            json.dumps(self.params)  # plain values only: a worker elsewhere gets the same unit
        except TypeError as e:
            raise ValueError(f"unit {self.name}'s parameters are not plain data: {e}") from None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "inputs": list(self.inputs), "params": self.params,
                "key": self.key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        return cls(data["name"], data["kind"], tuple(data.get("inputs", ())), dict(data.get("params", {})),
                   data.get("key", ""))


def caption_params(i: InterrogateSettings) -> dict[str, Any]:
    """A caption unit's parameters: the captioner's knobs and the mode (caption: BLIP alone)."""
    return {"mode": i.mode, "min_length": i.min_length, "max_length": i.max_length, "num_beams": i.num_beams,
            "no_repeat_ngram_size": i.no_repeat_ngram_size}


def paint_params(prompt: str, negative_prompt: str, seed: int, size: tuple[int, int], steps: int,
                 guidance: float, strength: float | None, lora: str | None,
                 leading: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A paint unit's parameters: everything its picture and its A1111 text depend on, but the model.
    leading: fields its A1111 text shows first (the telephone's step); options: painter_options."""
    params = {"prompt": prompt, "negative_prompt": negative_prompt, "seed": int(seed), "width": size[0],
              "height": size[1], "steps": steps, "guidance": guidance, "strength": strength, "lora": lora,
              **(options or {})}
    if leading:
        params["leading"] = dict(leading)
    return params


def painter_options(g: GenerateSettings) -> dict[str, Any]:
    """The refiner's and the ControlNet's parameters, for a paint unit: only those that are on (a
    unit without them is as before)."""
    out: dict[str, Any] = {}
    if g.refiner:
        out.update(refiner=g.refiner, refiner_switch=g.refiner_switch)
    if g.controlnet:
        out.update(controlnet=g.controlnet, control_scale=g.control_scale)
    return {**out, **style_image_params(g)}


def style_image_params(g: GenerateSettings) -> dict[str, Any]:
    """The style image's parameters (its path to read, its weight, its adapter, for the A1111 text)."""
    if not g.style_image:
        return {}
    return {"style_image": g.style_image, "style_image_scale": g.style_image_scale,
            "ip_adapter": g.ip_adapter_weight.rsplit(".", 1)[0]}


def needs_source(g: GenerateSettings) -> bool:
    """Whether a paint unit reads its source picture: img2img starts from it, ControlNet follows it."""
    return bool(g.strength or g.controlnet)


def seed_for(g: GenerateSettings, index: int) -> int:
    """The one seed rule: --seed plus the frame's number (a telephone chain: the step's), or --seed
    itself in fixed seed mode."""
    return g.seed if g.seed_mode == "fixed" else g.seed + index


def merge_negative(own: str, g: GenerateSettings) -> str:
    """A unit's negative prompt: its own (a row's, the interrogator's), then --negative-prompt."""
    return ", ".join(t for t in (own.strip(), g.negative_prompt.strip()) if t)
