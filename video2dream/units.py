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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from .tables import FRAME_NAME

if TYPE_CHECKING:
    from .settings import GenerateSettings, InterrogateSettings, Settings

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
        spec = KINDS.get(self.kind)
        if spec is None:
            raise ValueError(f"unit kind {self.kind!r}: one of {', '.join(KINDS)}")
        if not spec.names(self.name):
            raise ValueError(f"{self.kind} unit name {self.name!r} {spec.wrong_name}")
        self.inputs = tuple(self.inputs)
        for p in self.inputs:
            path = PurePosixPath(p)
            if not p or "\\" in p or path.is_absolute() or ".." in path.parts:
                raise ValueError(f"unit input {p!r} is not a path inside the run folder")
        try:
            json.dumps(self.params)  # plain values only: a worker elsewhere gets the same unit
        except TypeError as e:
            raise ValueError(f"unit {self.name}'s parameters are not plain data: {e}") from None

    @property
    def spec(self) -> KindSpec:
        return KINDS[self.kind]

    def typed(self) -> Any:
        """The parameters as the kind's dataclass (CaptionParams, PaintParams, MorphParams)."""
        return self.spec.params.from_dict(self.params)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "inputs": list(self.inputs), "params": self.params,
                "key": self.key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        return cls(data["name"], data["kind"], tuple(data.get("inputs", ())), dict(data.get("params", {})),
                   data.get("key", ""))


# -- each kind's parameters, typed ------------------------------------------------------------------
# A unit carries them as plain data (Unit.params: JSON, for a worker elsewhere); Unit.typed() reads
# them back as their kind's dataclass. to_dict() gives the same dict as before (an option that is off
# is left out, so a unit without it is as it was).


@dataclass(frozen=True)
class CaptionParams:
    """A caption unit's: the captioner's knobs and the mode (caption: BLIP alone)."""
    mode: str
    min_length: int
    max_length: int
    num_beams: int
    no_repeat_ngram_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptionParams:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class PaintParams:
    """A paint unit's: everything its picture and its A1111 text depend on, but the model."""
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    strength: float | None = None
    lora: str | None = None
    refiner: str | None = None  # the refiner and its switch point: only when on
    refiner_switch: float | None = None
    controlnet: str | None = None  # the ControlNet and its scale: only when on
    control_scale: float | None = None
    color_coherence: str | None = None  # applied by commit (every backend's result), shown in the text
    style_image: str | None = None  # --style-image (an absolute path), its weight and its IP-Adapter: only when on
    style_image_scale: float | None = None
    ip_adapter: str | None = None
    leading: dict[str, Any] | None = None  # fields its A1111 text shows first (a telephone step's)

    BASE = ("prompt", "negative_prompt", "seed", "width", "height", "steps", "guidance", "strength", "lora")
    OPTIONAL = ("refiner", "refiner_switch", "controlnet", "control_scale", "color_coherence", "style_image",
                "style_image_scale", "ip_adapter", "leading")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.BASE}
        d.update({k: getattr(self, k) for k in self.OPTIONAL if getattr(self, k) is not None})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PaintParams:
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class MorphParams(PaintParams):
    """A morph unit's: keyframe A's paint parameters, keyframe B's prompt, negative prompt and seed
    (b), its place t between them, the fields its A1111 text shows last (trailing) and its gap
    (count and the two dreams' keys: what a frame interpolation model needs; not in its text)."""
    t: float = 0.0
    b: dict[str, Any] | None = None
    trailing: dict[str, Any] | None = None
    gap: dict[str, Any] | None = None

    OPTIONAL = PaintParams.OPTIONAL + ("t", "b", "trailing", "gap")


def _refiner_on(s: Settings) -> bool:
    return bool(s.generate.refiner)


def _controlnet_on(s: Settings) -> bool:
    return bool(s.generate.controlnet)


def _weighting_on(s: Settings) -> bool:
    return bool(s.generate.prompt_weighting)


def _lora_on(s: Settings) -> bool:
    return bool(s.generate.lora)


def _frame_or_step(name: str) -> bool:
    return bool(FRAME_NAME.fullmatch(name) or STEP_NAME.fullmatch(name))


def _paintable(name: str) -> bool:
    """A frame's dream, a telephone step, or a frame's candidate of `generate --variants`."""
    return _frame_or_step(name) or bool(VARIANT_NAME.fullmatch(name))


@dataclass(frozen=True)
class KindSpec:
    """A kind of unit: its name, its typed parameters, what a backend returns for it (result: the
    class name in backends.base, Painted or Caption), the parameters one model call takes once (a
    batch shares them), its batch size, which names its units have, and its optional settings: those
    that change what it makes only where a backend applies them (setting path -> whether it is on)."""
    name: str
    params: type
    result: str
    makes: str  # what its units make, in words ("captions")
    shared: tuple[str, ...]
    batch_size: Callable[[Settings], int]
    names: Callable[[str], bool]
    wrong_name: str  # what a name it refuses is not
    optional: dict[str, Callable[[Settings], bool]] = field(default_factory=dict)


def _set(path: str) -> Callable[[Settings], bool]:
    section, name = path.split(".")
    return lambda s: getattr(getattr(s, section), name) is not None


PAINT_OPTIONAL = {"generate.refiner": _refiner_on, "generate.controlnet": _controlnet_on,
                  "generate.prompt_weighting": _weighting_on, "generate.lora": _lora_on,
                  "generate.scheduler": _set("generate.scheduler"), "generate.vae": _set("generate.vae"),
                  "generate.preview_vae": _set("generate.preview_vae")}

NOT_FRAME = "is neither a frame's nor a telephone step's"
NOT_PAINTABLE = "is neither a frame's, a variant's nor a telephone step's"
KINDS: dict[str, KindSpec] = {k.name: k for k in (
    KindSpec("caption", CaptionParams, "Caption", "captions",
             ("min_length", "max_length", "num_beams", "no_repeat_ngram_size", "mode"),
             lambda s: s.interrogate.batch_size, _frame_or_step, NOT_FRAME),
    KindSpec("paint", PaintParams, "Painted", "pictures",
             ("width", "height", "steps", "guidance", "strength", "controlnet", "control_scale", "refiner",
              "refiner_switch", "style_image", "style_image_scale"),
             lambda s: s.generate.batch_size, _paintable, NOT_PAINTABLE, PAINT_OPTIONAL),
    KindSpec("morph", MorphParams, "Painted", "in-betweens",
             ("width", "height", "steps", "guidance", "strength", "style_image", "style_image_scale"),
             lambda s: s.generate.batch_size, lambda n: bool(MORPH_NAME.fullmatch(n)),
             "is not an in-between's (000001-000002_01.png)", PAINT_OPTIONAL),
)}


def caption_params(i: InterrogateSettings) -> dict[str, Any]:
    """A caption unit's parameters: the captioner's knobs and the mode (caption: BLIP alone)."""
    return CaptionParams(i.mode, i.min_length, i.max_length, i.num_beams, i.no_repeat_ngram_size).to_dict()


def paint_params(prompt: str, negative_prompt: str, seed: int, size: tuple[int, int], steps: int,
                 guidance: float, strength: float | None, lora: str | None,
                 leading: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A paint unit's parameters: everything its picture and its A1111 text depend on, but the model.
    leading: fields its A1111 text shows first (the telephone's step); options: painter_options."""
    return PaintParams(prompt, negative_prompt, int(seed), size[0], size[1], steps, guidance, strength, lora,
                       leading=dict(leading) if leading else None, **(options or {})).to_dict()


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
