"""The settings tree: defaults, a preset or config file, the run folder's saved copy, CLI flags.

Everything is resolved in `resolve()`, in this order (later wins):
built-in defaults < settings saved in the run folder < preset / --config file < CLI flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import safeyaml
from .errors import COMMAND_LINE, SAVED_SETTINGS, SettingError, UserError, short, short_path

# Inside the package (declared as package data), so a wheel install has them too.
PRESETS_DIR = Path(__file__).resolve().parent / "presets"


# Each setting declares its role once, and every key is derived from the declarations (key_fields):
#   KEY       part of its stage's key as it is: changing it makes that stage's work again;
#   SPEED     changes how fast or on what, never what is made: in no key;
#   PER_UNIT  the stage hashes it per unit of work in the form it takes there (a frame's seed, the
#             negative prompt merged with the row's, the dream size worked out from pixels, the
#             extract's end clipped to the video, the sound file's fingerprint, the chain's length);
#   PER_CALL  about this one command (`assemble --from frames -o x.mp4`): never saved in the folder.
# new_if_unset: a setting added after folders were made; left out of keys while unset (None) or at
# its default, so that work made before it existed stays current. tags: what a stage may leave out as a group
# ("size": a stage that hashes the size it works out; "clip": used only by CLIP modes).
KEY, SPEED, PER_UNIT, PER_CALL = "key", "speed", "per-unit", "per-call"
ROLES = (KEY, SPEED, PER_UNIT, PER_CALL)


def setting(default: Any, role: str, *, new_if_unset: bool = False, tags: tuple[str, ...] = ()) -> Any:
    """A settings field with its role (see above): `steps: int = setting(30, KEY)`."""
    if role not in ROLES:
        raise ValueError(f"unknown setting role {role!r} (one of {', '.join(ROLES)})")
    return field(default=default, metadata={"role": role, "new_if_unset": new_if_unset, "tags": tags})


def role_of(f: dataclasses.Field) -> str:
    """A field's declared role; a setting without one is a programming error, caught by the tests."""
    role = f.metadata.get("role")
    if role not in ROLES:
        raise TypeError(f"setting '{f.name}' declares no role: give it setting(default, KEY/SPEED/PER_UNIT/PER_CALL)")
    return role


def key_fields(section: Any, roles: tuple[str, ...] = (KEY,), without: tuple[str, ...] = ()) -> dict[str, Any]:
    """A section's settings that go into a key, by name, in declaration order: those of these roles,
    less those tagged with any of `without`, less later additions while unset."""
    out = {}
    for f in fields(section):
        value = getattr(section, f.name)
        if role_of(f) not in roles or set(f.metadata.get("tags", ())) & set(without):
            continue
        if f.metadata.get("new_if_unset") and (value is None or value == f.default):
            continue
        out[f.name] = value
    return out


def inactive_tags(g: GenerateSettings) -> tuple[str, ...]:
    """Tags of generate settings that change nothing while the option they tune is off (the refiner's
    switch without a refiner): keys leave them out, so that work made without the option stays current."""
    from .models.controlnet import control_module

    off = [] if g.refiner else ["refiner"]
    if not g.controlnet:
        off.append("controlnet")
    if not g.controlnet or control_module(g.controlnet)[0] != "depth":
        off.append("depth")
    if not g.style_image:
        off.append("style_image")
    return tuple(off)


def per_call_paths(settings: Settings) -> list[tuple[str, str]]:
    """(section, name) of the settings that are about one command and never saved."""
    return [(section, f.name) for section in SECTIONS for f in fields(getattr(settings, section))
            if role_of(f) == PER_CALL]


@dataclass
class ExtractSettings:
    fps: float = setting(1.0, KEY)
    start: float | None = setting(None, PER_UNIT)  # hashed as 0 when unset
    end: float | None = setting(None, PER_UNIT)  # hashed clipped to the video's duration
    # keyframe timing: "seconds" (every 1/fps s) or "beats" of the soundtrack (every Nth: every);
    # scene_cuts: also a keyframe at every shot cut. At their defaults they are in no key.
    at: str = setting("seconds", KEY, new_if_unset=True)
    every: int = setting(1, KEY, new_if_unset=True)
    scene_cuts: bool = setting(False, KEY, new_if_unset=True)


@dataclass
class InterrogateSettings:
    mode: str = setting("fast", KEY)
    caption_model: str = setting("Salesforce/blip-image-captioning-large", KEY)
    clip_model: str = setting("ViT-L-14/openai", KEY, tags=("clip",))
    min_length: int = setting(30, KEY)
    max_length: int = setting(100, KEY)
    num_beams: int = setting(5, KEY)
    no_repeat_ngram_size: int = setting(2, KEY)
    batch_size: int = setting(4, SPEED)
    chunk_size: int = setting(2048, SPEED)
    flavor_intermediate_count: int = setting(2048, KEY, tags=("clip",))


@dataclass
class GenerateSettings:
    model: str = setting("stabilityai/stable-diffusion-xl-base-1.0", KEY)
    steps: int = setting(30, KEY)
    guidance: float = setting(7.0, KEY)
    scheduler: str | None = setting(None, KEY)
    negative_prompt: str = setting("", PER_UNIT)  # merged with each row's own
    seed: int = setting(0, PER_UNIT)  # with seed_mode: each frame's seed
    seed_mode: str = setting("per-frame", PER_UNIT)
    strength: float | None = setting(None, KEY)
    width: int | None = setting(None, KEY, tags=("size",))
    height: int | None = setting(None, KEY, tags=("size",))
    pixels: int = setting(1024 * 1024, PER_UNIT, tags=("size",))  # hashed as the size it gives
    batch_size: int = setting(1, SPEED)
    lora: str | None = setting(None, KEY)
    vae: str | None = setting(None, KEY)
    # an AutoencoderTiny (madebyollin/taesdxl): fast, softer decode
    preview_vae: str | None = setting(None, KEY, new_if_unset=True)
    compile: bool = setting(False, SPEED)  # torch.compile the UNet
    # "lab": each dream's LAB mean and std matched to its source frame's (less flicker); none: off
    color_coherence: str = setting("none", KEY, new_if_unset=True)
    # SDXL's refiner takes over the base's latents at refiner_switch of the denoising
    refiner: str | None = setting(None, KEY, new_if_unset=True)
    refiner_switch: float = setting(0.8, KEY, tags=("refiner",))  # in keys only with a refiner
    # a1111: prompts in 75-token chunks (nothing cut) with (word:1.3) weights; None (none): as before
    prompt_weighting: str | None = setting(None, KEY, new_if_unset=True)
    controlnet: str | None = setting(None, KEY, new_if_unset=True)  # canny, depth, [MODULE:]ID_OR_PATH
    control_scale: float = setting(0.5, KEY, tags=("controlnet",))  # in keys only with a ControlNet
    depth_model: str = setting("Intel/dpt-hybrid-midas", KEY, tags=("depth",))  # for --controlnet depth
    # the look of every dream (styles.py): a template with {prompt}, or text appended; the rows stay as written
    style: str | None = setting(None, KEY, new_if_unset=True)
    negative_style: str | None = setting(None, KEY, new_if_unset=True)
    # an image whose look every dream takes (IP-Adapter); hashed per unit as its content's hash
    style_image: str | None = setting(None, PER_UNIT, new_if_unset=True)
    style_image_scale: float = setting(0.6, KEY, tags=("style_image",))  # in keys only with a style image
    ip_adapter: str = setting("h94/IP-Adapter", KEY, tags=("style_image",))  # id or folder
    ip_adapter_subfolder: str = setting("sdxl_models", KEY, tags=("style_image",))
    ip_adapter_weight: str = setting("ip-adapter_sdxl.safetensors", KEY, tags=("style_image",))


@dataclass
class AssembleSettings:
    source: str = setting("dreams", PER_CALL)  # --from
    output: str | None = setting(None, PER_CALL)  # -o
    audio: str = setting("auto", PER_UNIT)  # hashed as the sound file's fingerprint
    transition: str = setting("cut", KEY)
    side_by_side: bool = setting(False, PER_UNIT)  # hashed as whether one is made (never from frames)
    out_fps: float = setting(30.0, KEY)
    crf: int = setting(18, KEY)


@dataclass
class MorphSettings:
    """`video2dream morph`: the in-betweens between consecutive dreams. Both are hashed per unit as
    the t values they give (part of each in-between's key)."""

    inbetweens: int | None = setting(None, PER_UNIT)  # per gap; None: as many as assemble.out_fps needs
    pacing: str = setting("linear", PER_UNIT)  # linear, or audio: spaced by the soundtrack's onsets


@dataclass
class TelephoneSettings:
    """`video2dream telephone`: the chain's own knobs (the models are interrogate's and generate's).
    Its KEY settings make the chain's outputs' key; the chain's own key is interrogate's and generate's."""

    steps: int = setting(10, PER_UNIT)  # times the picture goes round (a video: rounds)
    # interrogate mode of the chain (the chain's interrogate.mode): the original game used the BLIP caption alone
    mode: str = setting("caption", PER_UNIT)
    stop_at_fixed_point: bool = setting(False, PER_UNIT)  # with steps: how many steps the outputs show
    hold: float = setting(1.0, KEY)  # seconds each step is shown in chain.mp4
    crossfade: float = setting(0.0, KEY)  # seconds of each hold spent fading into the next step
    strip_height: int = setting(256, KEY)  # pixels of each picture's height in chain_strip.png


@dataclass
class RaySettings:
    """--backend ray: what each kind's actor asks of a node (how fast, on what: never what is made).
    A captioner (BLIP + CLIP, a few GB) shares a GPU; an SDXL painter wants one of its own."""

    caption_gpus: float = setting(0.25, SPEED)  # of a GPU per captioning actor: four share one
    paint_gpus: float = setting(1.0, SPEED)  # of a GPU per painting actor (dreams, in-betweens)
    cpus: float | None = setting(None, SPEED)  # CPUs per actor (none: 1 with a GPU; on CPUs, a node's share)
    shared_folder: bool = setting(False, SPEED)  # check that every node sees the run folder (not needed)


@dataclass
class Settings:
    device: str = setting("auto", SPEED)
    dtype: str = setting("auto", KEY)  # in generate's and the chain's keys
    # where model units run (video2dream.backends: local, ray, replicate); a backend whose results
    # differ from local's (a remote service) adds its own part to their keys
    backend: str = setting("local", SPEED)
    # a backend's parallel workers (None: its own choice); ray also takes a range "2-8" (an autoscaling pool)
    workers: int | str | None = setting(None, SPEED)
    ray_address: str | None = setting(None, SPEED)  # the ray backend's cluster (None: RAY_ADDRESS, or a local one)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    interrogate: InterrogateSettings = field(default_factory=InterrogateSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    assemble: AssembleSettings = field(default_factory=AssembleSettings)
    morph: MorphSettings = field(default_factory=MorphSettings)
    telephone: TelephoneSettings = field(default_factory=TelephoneSettings)
    ray: RaySettings = field(default_factory=RaySettings)
    # and a field per registered section (register_section: a backend's own, such as replicate)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The sections, in the order saved: the core's, then those registered (a list: registering appends).
SECTIONS: list[str] = ["extract", "interrogate", "generate", "assemble", "morph", "telephone", "ray"]
# Checks of registered sections, run by validate after RANGES: fn(settings, origins).
SECTION_CHECKS: list[Callable[[Settings, dict[str, str] | None], None]] = []


def register_section(name: str, cls: type, *, ranges: Sequence[tuple[str, Callable[[Any], bool], str]] = (),
                     choices: dict[str, tuple[str, ...]] | None = None,
                     check: Callable[[Settings, dict[str, str] | None], None] | None = None) -> None:
    """Add a section of settings (`name: {...}` in a config file, `settings.NAME` in code) without editing
    this module: a backend registers its own at import. cls is a dataclass whose fields are setting()s;
    ranges (full paths), choices and check are validated like the core's. Registering the same class
    again does nothing. Settings made before a section is registered lack it: register at import."""
    known = Settings.__dataclass_fields__.get(name)
    if known is not None:
        if name in SECTIONS and known.default_factory is cls:
            return
        raise ValueError(f"setting section {name!r} is already taken")
    if not name.isidentifier() or name in ("name", "description"):
        raise ValueError(f"{name!r} cannot name a setting section")
    for f in fields(cls):
        role_of(f)  # each setting declares its role
    # Rebuild the dataclass with one more field: every copy (dataclasses.replace), comparison,
    # asdict and fields() then knows the section like a core one.
    for f in fields(Settings):
        setattr(Settings, f.name, f)
    Settings.__annotations__[name] = cls.__name__
    setattr(Settings, name, field(default_factory=cls))
    for attr in ("__init__", "__repr__", "__eq__", "__match_args__"):
        if attr in Settings.__dict__:
            delattr(Settings, attr)
    dataclass(Settings)
    SECTIONS.append(name)
    RANGES.extend(ranges)
    CHOICES.update(choices or {})
    if check is not None:
        SECTION_CHECKS.append(check)


TOP_LEVEL = ("device", "dtype", "backend", "workers", "ray_address")


def stable_hash(*parts: Any, length: int = 16) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def is_preset_file(name: str) -> bool:
    """`--preset NAME` names a built-in preset; `--preset some/file.yaml` is a file of one's own."""
    return "/" in name or os.sep in name or name.lower().endswith((".yaml", ".yml"))


def preset_path(name: str) -> Path:
    if is_preset_file(name):
        path = Path(name).expanduser()
        if not _is_file(path):
            raise UserError(f"preset file not found: {short_path(name)}; give an existing YAML file, or a preset name "
                            f"({', '.join(preset_names()) or 'none'})")
        return path
    path = PRESETS_DIR / f"{name}.yaml"
    if not _is_file(path):
        known = ", ".join(preset_names()) or "none"
        raise UserError(f"unknown preset {short(name)} (known presets: {known}); or pass --config FILE")
    return path


def _is_file(path: Path) -> bool:
    """Whether path is a regular file; a name too long for one (ENAMETOOLONG) is not."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def load_yaml(path: Path) -> dict[str, Any]:
    if not _is_file(path):  # a FIFO would block the read forever
        if _exists(str(path)):
            raise UserError(f"config file {path} is not a regular file; give a YAML file")
        raise UserError(f"config file not found: {short_path(path)}")
    try:
        data = safeyaml.read(path)
    except OSError as e:
        raise UserError(f"config file {path} cannot be read ({e.strerror or e}); check its permissions") from None
    except safeyaml.Unsafe as e:
        raise UserError(f"config file {path} is refused: {e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):  # an empty file too: a typo'd path to an emptied file must not pass as "no changes"
        raise UserError(f"config file {path} holds {safeyaml.kind_of(data)}; it must hold a mapping of sections "
                        "(extract:, generate:, ...)")
    return data


def _merge_section(target: Any, values: dict[str, Any], where: str, section: str,
                   origins: dict[str, str]) -> None:
    names = {f.name: f for f in fields(target)}
    for name, value in values.items():
        name = str(name).replace("-", "_")
        if name not in names:
            raise UserError(f"{where} [{section}]: unknown setting {short(name)} (known: {', '.join(names)})")
        setattr(target, name, value)
        origins[f"{section}.{name}"] = where


def merge(settings: Settings, data: dict[str, Any], where: str, origins: dict[str, str] | None = None) -> None:
    """Overlay a nested mapping ({section: {name: value}} or top-level keys) onto settings.
    origins, if given, learns where each value came from (for error messages)."""
    origins = {} if origins is None else origins
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key in TOP_LEVEL:
            setattr(settings, key, value)
            origins[key] = where
        elif key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise UserError(f"{where}: section '{key}' must be a mapping")
            _merge_section(getattr(settings, key), value, where, key, origins)
        elif key in ("name", "description"):
            continue
        else:
            raise UserError(f"{where}: unknown section {short(key)} (known: {', '.join(SECTIONS)})")


def resolve(
    saved: dict[str, Any] | None = None,
    preset: str | Sequence[str] | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """The one place defaults, saved run settings, preset/config file and CLI flags meet.

    Values are checked (types, then ranges) before anything can save them; local paths are made
    absolute, so that the saved settings work from any working directory."""
    settings = Settings()
    origins: dict[str, str] = {}
    if saved:
        merge(settings, saved, SAVED, origins)
    for name in [preset] if isinstance(preset, str) else preset or ():  # `--preset tiny --preset weird`
        merge(settings, load_yaml(preset_path(name)), f"preset '{name}'", origins)
    if config:
        merge(settings, load_yaml(Path(config)), f"config {config}", origins)
    if overrides:
        merge(settings, overrides, COMMAND_LINE, origins)
    check_types(settings, origins)
    _keep_caption_range(settings, origins)
    normalize(settings)
    validate(settings, origins)
    settings._origins = origins  # type: ignore[attr-defined] # not a field: never saved (see origin)
    return settings


def origin(settings: Settings, path: str) -> str | None:
    """Where resolve took a setting's value from (SAVED: the run folder's settings.yaml; COMMAND_LINE;
    a preset or config file); None for a built-in default or settings not made by resolve."""
    return getattr(settings, "_origins", {}).get(path)


SAVED = SAVED_SETTINGS  # where a value came from, for messages; COMMAND_LINE: typed by the caller


def _keep_caption_range(settings: Settings, origins: dict[str, str]) -> None:
    """`--min-length 40` on a folder whose maximum is 20 (the tiny preset's) moves the maximum up with
    it, and a `--max-length` below the minimum moves the minimum down: the flag typed wins over a
    value that came from a preset or the folder. Both typed and crossed is still an error."""
    i = settings.interrogate
    typed_min = origins.get("interrogate.min_length") == COMMAND_LINE
    typed_max = origins.get("interrogate.max_length") == COMMAND_LINE
    if i.min_length > i.max_length and typed_min != typed_max:
        if typed_min:
            i.max_length = i.min_length
        else:
            i.min_length = i.max_length


def check_setting(ok: bool, path: str, problem: str, hint: str = "", *, also: tuple[str, ...] = (),
           origins: dict[str, str] | None = None) -> None:
    """Raise a SettingError about path unless ok; problem and hint name other settings as {path}."""
    if not ok:
        raise SettingError(path, problem, hint, also=also, origin=(origins or {}).get(path))


_check = check_setting


# Bounds that keep a value from hanging or breaking every later command on the folder (settings
# are saved): ranges far beyond any use, but finite.
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; per-frame seeds add the frame number
MAX_TOKENS = 512  # BLIP's text positions (large, base and the tiny preset): no caption is longer
MAX_SIDE = 8192  # pixels of a dream's side
MAX_PIXELS = 4096 * 4096  # pixels of a dream

def _finite(value: Any) -> bool:
    try:
        return _num(value) and math.isfinite(value)
    except OverflowError:  # an int past a float's range (10**400)
        return False


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (_finite, "a finite number"),
    "str": (lambda v: isinstance(v, str), "text"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


def _items(s: Settings) -> Iterator[tuple[str, str, Any]]:
    """(path, type annotation, value) of every setting."""
    for f in fields(s):
        if f.name in SECTIONS:
            section = getattr(s, f.name)
            for g in fields(section):
                yield f"{f.name}.{g.name}", _annotation(g.type), getattr(section, g.name)
        else:
            yield f.name, _annotation(f.type), getattr(s, f.name)


def _annotation(t: Any) -> str:
    """A field's type as written ("int | None"), whether its module postpones annotations or not."""
    return t if isinstance(t, str) else getattr(t, "__name__", None) or str(t)


def check_types(s: Settings, origins: dict[str, str] | None = None) -> None:
    """Each value of the type its setting holds (YAML may give a list, a string, a bool, NaN...)."""
    for path, annotation, value in _items(s):
        kinds = [k.strip() for k in annotation.split("|")]
        if value is None and "None" in kinds:
            continue
        tests = [_KINDS[k] for k in kinds if k in _KINDS]
        if not any(test(value) for test, _ in tests):
            what = " or ".join(text for _, text in tests) + (", or none" if "None" in kinds else "")
            _check(False, path, f"must be {what}, got {short(value)}", origins=origins)


def normalize(s: Settings) -> None:
    """The ways back to a default: strength 0 is text-to-image, width/height 0 is automatic,
    'none' (or 'default' for the scheduler) unsets a model option. Local paths become absolute."""
    g = s.generate
    if g.strength == 0:
        g.strength = None
    g.width = g.width or None
    g.height = g.height or None
    for name in ("scheduler", "lora", "vae", "preview_vae", "refiner", "prompt_weighting", "controlnet",
                 "style", "negative_style", "style_image"):
        value = getattr(g, name)
        if value is not None and value.strip().lower() in ("", "none", "default"):
            setattr(g, name, None)
    _absolute_paths(s)


def _exists(value: str) -> bool:
    """Whether value names an existing file or folder; a name too long for one (ENAMETOOLONG) does not."""
    try:
        return Path(value).expanduser().exists()
    except (OSError, ValueError):
        return False


def _absolute(value: str) -> str:
    """An existing local file or folder as an absolute path; anything else (a hub id) as it is."""
    return os.path.abspath(Path(value).expanduser()) if value and _exists(value) else value


def _absolute_paths(s: Settings) -> None:
    """Saved settings must work from any working directory: local paths are saved absolute."""
    i, g, a = s.interrogate, s.generate, s.assemble
    i.caption_model = _absolute(i.caption_model)
    arch, sep, pretrained = i.clip_model.partition("/")
    if sep and _exists(pretrained) and Path(pretrained).expanduser().is_file():  # NAME/PRETRAINED: a weights file
        i.clip_model = f"{arch}/{_absolute(pretrained)}"
    for name in ("model", "vae", "preview_vae", "refiner", "depth_model", "style_image", "ip_adapter"):
        if getattr(g, name):
            setattr(g, name, _absolute(getattr(g, name)))
    if g.lora:
        head, sep, tail = g.lora.rpartition(":")
        scaled = bool(sep and head) and _finite_text(tail)
        g.lora = f"{_absolute(head)}:{tail}" if scaled else _absolute(g.lora)
    if g.controlnet:
        from .models.controlnet import control_module

        module, model = control_module(g.controlnet)
        if _absolute(model) != model:  # a local ControlNet folder
            g.controlnet = f"{module}:{_absolute(model)}"
    if a.audio not in ("auto", "none"):
        a.audio = _absolute(a.audio)


def _finite_text(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def within(low: float, high: float, none_ok: bool = False) -> Callable[[Any], bool]:
    return lambda v: (none_ok and v is None) or (v is not None and low <= v <= high)


# (setting, test, what it must be): run after check_types, so the tests see numbers of the right kind.
RANGES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("extract.fps", within(0.001, 240), "from 0.001 to 240 frames per second"),
    ("extract.start", within(0, math.inf, none_ok=True), ">= 0 seconds (or none: the beginning)"),
    ("extract.end", lambda v: v is None or v > 0, "> 0 seconds (or none: the end)"),
    ("extract.every", within(1, 1000), "a whole number from 1 to 1000 (a keyframe on every Nth beat)"),
    ("interrogate.min_length", within(1, MAX_TOKENS), f"from 1 to {MAX_TOKENS} tokens"),
    ("interrogate.max_length", within(1, MAX_TOKENS), f"from 1 to {MAX_TOKENS} tokens (BLIP's limit)"),
    ("interrogate.num_beams", within(1, 64), "from 1 to 64"),
    ("interrogate.no_repeat_ngram_size", within(0, MAX_TOKENS), f"from 0 (off) to {MAX_TOKENS}"),
    ("interrogate.batch_size", within(1, 1024), "from 1 to 1024 frames"),
    ("interrogate.chunk_size", within(1, 1_000_000), "from 1 to 1000000"),
    ("interrogate.flavor_intermediate_count", within(1, 1_000_000), "from 1 to 1000000"),
    ("generate.steps", within(1, 1000), "from 1 to 1000 steps"),
    ("generate.guidance", within(0, 100), "from 0 to 100"),
    ("generate.seed", within(0, MAX_SEED), f"a whole number from 0 to {MAX_SEED}"),
    ("generate.strength", lambda v: v is None or 0 < v <= 1, "in (0, 1] (0 or none: text to image)"),
    ("generate.width", lambda v: v is None or (64 <= v <= MAX_SIDE and v % 8 == 0),
     f"a multiple of 8 from 64 to {MAX_SIDE} (0 or auto: the source's shape)"),
    ("generate.height", lambda v: v is None or (64 <= v <= MAX_SIDE and v % 8 == 0),
     f"a multiple of 8 from 64 to {MAX_SIDE} (0 or auto: the source's shape)"),
    ("generate.pixels", within(64 * 64, MAX_PIXELS), f"from {64 * 64} to {MAX_PIXELS} pixels"),
    ("generate.batch_size", within(1, 64), "from 1 to 64 frames"),
    ("generate.refiner_switch", lambda v: 0 < v < 1, "between 0 and 1 (the part of the denoising the base does)"),
    ("generate.control_scale", within(0, 2), "from 0 to 2 (the ControlNet's weight)"),
    ("generate.style_image_scale", within(0, 2), "from 0 to 2 (the style image's weight)"),
    ("assemble.out_fps", within(1, 240), "from 1 to 240 frames per second"),
    ("assemble.crf", within(0, 51), "from 0 (lossless) to 51 (x264's range)"),
    ("morph.inbetweens", within(0, 1000, none_ok=True),
     "a whole number of in-betweens per gap from 0 to 1000 (or none: as many as assemble.out_fps needs)"),
    ("telephone.steps", within(1, 1000), "a whole number from 1 to 1000 (how many times the picture goes round)"),
    ("telephone.hold", lambda v: 0 < v <= 3600, "a positive number of seconds, at most 3600"),
    ("telephone.strip_height", within(64, 4096), "a whole number of pixels from 64 to 4096"),
    ("workers", lambda v: v is None or 1 <= (worker_range(v) or (0, 0))[0] <= (worker_range(v) or (0, 0))[1] <= 1024,
     "a whole number from 1 to 1024, or a range such as 2-8 (or none: the backend's choice)"),
    ("ray.caption_gpus", within(0, 64), "from 0 to 64 GPUs per captioning actor (e.g. 0.25: four share a GPU)"),
    ("ray.paint_gpus", within(0, 64), "from 0 to 64 GPUs per painting actor (e.g. 1)"),
    ("ray.cpus", lambda v: v is None or 0 < v <= 1024, "> 0 and at most 1024 CPUs per actor (or none: automatic)"),
]


def worker_range(value: Any) -> tuple[int, int] | None:
    """--workers as (fewest, most): a count N is (N, N), a range "2-8" is (2, 8); None if it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    m = re.fullmatch(r"\s*([0-9]+)\s*-\s*([0-9]+)\s*", value) if isinstance(value, str) else None
    return (int(m[1]), int(m[2])) if m else None


def workers_value(text: str) -> int | str:
    """--workers on the command line: a count, or a range kept as typed ("2-8")."""
    text = text.strip()
    return int(text) if text.isdigit() else text


def validate(s: Settings, origins: dict[str, str] | None = None) -> None:
    """Every value in range (RANGES) and the settings consistent; types are check_types's."""
    values = {path: value for path, _, value in _items(s)}
    for path, ok, what in RANGES:
        _check(ok(values[path]), path, f"must be {what}, got {short(values[path])}", origins=origins)
    e, i, g, a, t = s.extract, s.interrogate, s.generate, s.assemble, s.telephone
    o = origins
    if e.start is not None and e.end is not None:
        _check(e.end > e.start, "extract.end", f"({e.end}) must be after {{extract.start}} ({e.start})",
               also=("extract.start",), origins=o)
    _one_of(e.at, "extract.at", CHOICES["extract.at"], o)
    _one_of(i.mode, "interrogate.mode", CHOICES["interrogate.mode"], o)
    _check(i.max_length >= i.min_length, "interrogate.max_length",
           f"({i.max_length}) must be >= {{interrogate.min_length}} ({i.min_length})",
           "raise {interrogate.max_length} or lower {interrogate.min_length}", also=("interrogate.min_length",),
           origins=o)
    _check("/" in i.clip_model or i.clip_model.startswith("tiny:"), "interrogate.clip_model",
           f"must look like NAME/PRETRAINED, got {short(i.clip_model)}", "e.g. ViT-L-14/openai", origins=o)
    _one_of(g.seed_mode, "generate.seed_mode", CHOICES["generate.seed_mode"], o)
    _one_of(g.color_coherence, "generate.color_coherence", CHOICES["generate.color_coherence"], o)
    _check((g.width is None) == (g.height is None), "generate.height" if g.width is None else "generate.width",
           "give {generate.width} and {generate.height} together (or neither: the source's shape)",
           also=("generate.height", "generate.width"), origins=o)
    if g.width and g.height:
        _check(g.width * g.height <= MAX_PIXELS, "generate.width",
               f"x {{generate.height}} must be at most {MAX_PIXELS} pixels (4096x4096), got {g.width}x{g.height}",
               also=("generate.height",), origins=o)
    _check(not (g.vae and g.preview_vae), "generate.vae", "give {generate.vae} or {generate.preview_vae}, not both",
           "none turns one off", also=("generate.preview_vae",), origins=o)
    if g.prompt_weighting is not None:
        _one_of(g.prompt_weighting, "generate.prompt_weighting", CHOICES["generate.prompt_weighting"], o)
    _check(not (g.refiner and g.controlnet and g.strength), "generate.refiner",
           "with {generate.controlnet} works from text only: diffusers' ControlNet img2img cannot hand its "
           "latents to a refiner", "drop {generate.strength}, {generate.refiner} or {generate.controlnet}",
           also=("generate.controlnet", "generate.strength"), origins=o)
    _check(a.source in ("dreams", "frames") or re.fullmatch(r"dreams_r[0-9]{2,}", str(a.source)) is not None,
           "assemble.source", f"must be 'dreams', 'frames' or a telephone round's folder such as dreams_r02, "
           f"got {short(a.source)}", origins=o)
    _one_of(a.transition, "assemble.transition", CHOICES["assemble.transition"], o)
    _one_of(s.morph.pacing, "morph.pacing", CHOICES["morph.pacing"], o)
    _one_of(t.mode, "telephone.mode", CHOICES["telephone.mode"], o)
    _check(0 <= t.crossfade < t.hold, "telephone.crossfade",
           f"must be >= 0 and shorter than {{telephone.hold}} ({t.hold} s), got {short(t.crossfade)}",
           also=("telephone.hold",), origins=o)
    _check(s.device in ("auto", "cpu", "mps") or str(s.device).startswith("cuda"), "device",
           f"{short(s.device)} is unknown: choose from auto, cpu, cuda, cuda:N, mps", origins=o)
    _one_of(s.dtype, "dtype", CHOICES["dtype"], o)
    _check(not isinstance(s.workers, str) or s.backend == "ray", "workers",
           f"a range ({short(s.workers)}) is an autoscaling pool of --backend ray", "give a count for {backend} "
           f"{s.backend}", also=("backend",), origins=o)
    _check(isinstance(s.backend, str) and s.backend.isidentifier(), "backend",
           f"{short(s.backend)} is not a backend's name", "e.g. local", origins=o)
    _check_names(s, o)
    for check in SECTION_CHECKS:
        check(s, o)


# Settings that name a model: a Hugging Face id (OWNER/NAME, at most 96 characters a part) or a local path.
MODEL_NAMES = ("interrogate.caption_model", "interrogate.clip_model", "generate.model", "generate.vae",
               "generate.preview_vae", "generate.refiner", "generate.lora", "generate.controlnet",
               "generate.depth_model")
MAX_PATH_BYTES, MAX_NAME_BYTES = 4096, 255  # Linux's PATH_MAX and NAME_MAX


def _controls(text: str) -> bool:
    """Whether text holds a control character (NUL, newline, escape, ...)."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def _could_be_a_name(text: str) -> bool:
    """Whether text can be a model id or a path at all: no control character, not past the system's
    limits on a path and on each of its parts."""
    return not _controls(text) and len(text.encode(errors="replace")) <= MAX_PATH_BYTES and all(
        len(part.encode(errors="replace")) <= MAX_NAME_BYTES for part in text.split("/"))


def _check_names(s: Settings, o: dict[str, str] | None) -> None:
    """Names that reach a file system, a hub or a cluster: one that cannot be one is refused before
    it is saved, in a short line (a 10,000-character --model was an OSError echoing all of it)."""
    values = {path: value for path, _, value in _items(s)}
    for path in MODEL_NAMES:
        value = values[path]
        _check(value is None or _could_be_a_name(value), path,
               f"is neither a model id nor a local path: got {short(value)}",
               "give a Hugging Face id (OWNER/NAME) or an existing file or folder", origins=o)
    ray = s.ray_address
    _check(ray is None or (" " not in ray and not _controls(ray)), "ray_address",
           f"must be a cluster's address without spaces or control characters, got {short(s.ray_address)}",
           "e.g. HEAD:6379, ray://HEAD:10001 or auto", origins=o)
    _check("\0" not in s.assemble.audio, "assemble.audio", f"holds a NUL character: got {short(s.assemble.audio)}",
           "give auto, none or the path of a sound file", origins=o)


TRANSITIONS = ("cut", "crossfade", "flow", "morph")
INTERROGATE_MODES = ("best", "classic", "fast", "negative", "caption")
TELEPHONE_MODES = ("caption", "fast", "classic", "best", "negative")
PROMPT_WEIGHTINGS = ("a1111", "none")
DTYPES = ("auto", "fp32", "fp16", "bf16", "float32", "float16", "bfloat16")
# The settings that take one of a few words: checked by validate, shown by --help and the reference.
CHOICES: dict[str, tuple[str, ...]] = {
    "extract.at": ("seconds", "beats"),
    "interrogate.mode": INTERROGATE_MODES,
    "generate.seed_mode": ("fixed", "per-frame"),
    "generate.color_coherence": ("none", "lab"),
    "generate.prompt_weighting": PROMPT_WEIGHTINGS,
    "assemble.transition": TRANSITIONS,
    "morph.pacing": ("linear", "audio"),
    "telephone.mode": TELEPHONE_MODES,
    "dtype": DTYPES,
}


def _one_of(value: Any, path: str, choices: tuple[str, ...], origins: dict[str, str] | None) -> None:
    _check(value in choices, path, f"{short(value)} is unknown: choose from {', '.join(choices)}", origins=origins)


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A value as one would type it: true/false, none, text quoted when it has spaces or is empty."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "none"}[value]
    if isinstance(value, str) and (not value or " " in value or "," in value):
        return repr(value)
    return str(value)


def differences(s: Settings) -> dict[str, Any]:
    """The settings that differ from the built-in defaults, as a nested mapping (for `status --json`)."""
    default = Settings().to_dict()
    out: dict[str, Any] = {}
    for key, value in s.to_dict().items():
        if isinstance(value, dict):
            changed = {name: v for name, v in value.items() if v != default[key][name]}
            if changed:
                out[key] = changed
        elif value != default[key]:
            out[key] = value
    return out


def describe(s: Settings) -> list[str]:
    """The settings that differ from the built-in defaults, one line per section (for `status`)."""
    return describe_differences(differences(s))


def describe_differences(changed: dict[str, Any]) -> list[str]:
    return [f"{key}: {', '.join(f'{n}={_shown(v)}' for n, v in value.items())}" if isinstance(value, dict)
            else f"{key}: {value}" for key, value in changed.items()]


def replace_section(settings: Settings, section: str, **changes: Any) -> Settings:
    new = dataclasses.replace(settings)
    setattr(new, section, dataclasses.replace(getattr(settings, section), **changes))
    return new


# The built-in backends' own sections, registered here in one place so that resolve knows them before
# any backend is chosen (a backend module registers its section at import; importing it is cheap).
from .backends import replicate as _replicate  # noqa: E402,F401
