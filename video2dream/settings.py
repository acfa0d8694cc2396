"""The settings tree: defaults, a preset or config file, the run folder's saved copy, CLI flags.

Everything is resolved in `resolve()`, in this order (later wins):
built-in defaults < settings saved in the run folder < preset / --config file < CLI flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ExtractSettings:
    fps: float = 1.0
    start: float | None = None
    end: float | None = None


@dataclass
class InterrogateSettings:
    mode: str = "fast"
    caption_model: str = "Salesforce/blip-image-captioning-large"
    clip_model: str = "ViT-L-14/openai"
    min_length: int = 30
    max_length: int = 100
    num_beams: int = 5
    no_repeat_ngram_size: int = 2
    batch_size: int = 4
    chunk_size: int = 2048
    flavor_intermediate_count: int = 2048


@dataclass
class GenerateSettings:
    model: str = "stabilityai/stable-diffusion-xl-base-1.0"
    steps: int = 30
    guidance: float = 7.0
    scheduler: str | None = None
    negative_prompt: str = ""
    seed: int = 0
    seed_mode: str = "per-frame"
    strength: float | None = None
    width: int | None = None
    height: int | None = None
    pixels: int = 1024 * 1024
    batch_size: int = 1
    lora: str | None = None
    vae: str | None = None
    preview_vae: str | None = None  # an AutoencoderTiny (madebyollin/taesdxl): fast, softer decode
    compile: bool = False  # torch.compile the UNet: a speed knob, not part of a dream's key


# Settings that change speed only, or that were added later and are left out of keys while unset
# (so that dreams and chains made before they existed stay current).
GENERATE_SPEED_ONLY = ("compile",)
GENERATE_NEW_IF_UNSET = ("preview_vae",)


def generate_key_fields(g: GenerateSettings) -> dict[str, Any]:
    """generate's settings as a dict for keys: speed-only knobs out, later additions out while unset."""
    d = asdict(g)
    for name in GENERATE_SPEED_ONLY:
        d.pop(name, None)
    for name in GENERATE_NEW_IF_UNSET:
        if d.get(name) is None:
            d.pop(name, None)
    return d


@dataclass
class AssembleSettings:
    source: str = "dreams"  # --from
    output: str | None = None
    audio: str = "auto"
    transition: str = "cut"
    side_by_side: bool = False
    out_fps: float = 30.0
    crf: int = 18


@dataclass
class TelephoneSettings:
    """`video2dream telephone`: the chain's own knobs (the models are interrogate's and generate's)."""

    steps: int = 10  # times the picture goes round (a video: rounds)
    mode: str = "caption"  # interrogate mode of the chain: the original game used the BLIP caption alone
    stop_at_fixed_point: bool = False
    hold: float = 1.0  # seconds each step is shown in chain.mp4
    crossfade: float = 0.0  # seconds of each hold spent fading into the next step
    strip_height: int = 256  # pixels of each picture's height in chain_strip.png


@dataclass
class Settings:
    device: str = "auto"
    dtype: str = "auto"
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    interrogate: InterrogateSettings = field(default_factory=InterrogateSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    assemble: AssembleSettings = field(default_factory=AssembleSettings)
    telephone: TelephoneSettings = field(default_factory=TelephoneSettings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SECTIONS = ("extract", "interrogate", "generate", "assemble", "telephone")
TOP_LEVEL = ("device", "dtype")


def stable_hash(*parts: Any, length: int = 16) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def preset_path(name: str) -> Path:
    path = CONFIGS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))) or "none"
        raise UserError(f"unknown preset '{name}' (known presets: {known}); or pass --config FILE")
    return path


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid YAML: {e}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections (extract:, generate:, ...)")
    return data


def _merge_section(target: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name: f for f in fields(target)}
    for name, value in values.items():
        name = name.replace("-", "_")
        if name not in names:
            raise UserError(f"{where}: unknown setting '{name}' (known: {', '.join(names)})")
        setattr(target, name, value)


def merge(settings: Settings, data: dict[str, Any], where: str) -> None:
    """Overlay a nested mapping ({section: {name: value}} or top-level keys) onto settings."""
    for key, value in data.items():
        key = key.replace("-", "_")
        if key in TOP_LEVEL:
            setattr(settings, key, value)
        elif key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise UserError(f"{where}: section '{key}' must be a mapping")
            _merge_section(getattr(settings, key), value, f"{where} [{key}]")
        elif key in ("name", "description"):
            continue
        else:
            raise UserError(f"{where}: unknown section '{key}' (known: {', '.join(SECTIONS)})")


def resolve(
    saved: dict[str, Any] | None = None,
    preset: str | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """The one place defaults, saved run settings, preset/config file and CLI flags meet."""
    settings = Settings()
    if saved:
        merge(settings, saved, "saved run settings")
    if preset:
        merge(settings, load_yaml(preset_path(preset)), f"preset '{preset}'")
    if config:
        merge(settings, load_yaml(Path(config)), f"config {config}")
    if overrides:
        merge(settings, overrides, "command line")
    validate(settings)
    return settings


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(s: Settings) -> None:
    e, i, g, a = s.extract, s.interrogate, s.generate, s.assemble
    _check(_num(e.fps) and e.fps > 0, f"--fps must be a positive number, got {e.fps!r}")
    _check(e.start is None or (_num(e.start) and e.start >= 0), "--start must be >= 0 seconds")
    _check(e.end is None or (_num(e.end) and e.end > 0), "--end must be > 0 seconds")
    if e.start is not None and e.end is not None:
        _check(e.end > e.start, f"--end ({e.end}) must be after --start ({e.start})")
    modes = ("best", "classic", "fast", "negative", "caption")
    _check(i.mode in modes, f"unknown --mode '{i.mode}' (choose from {', '.join(modes)})")
    for name in ("min_length", "max_length", "num_beams", "batch_size", "chunk_size"):
        value = getattr(i, name)
        _check(isinstance(value, int) and value >= 1, f"--{name.replace('_', '-')} must be >= 1")
    _check(i.no_repeat_ngram_size >= 0, "--no-repeat-ngram-size must be >= 0")
    _check(i.max_length >= i.min_length, "--max-length must be >= --min-length")
    _check("/" in i.clip_model or i.clip_model.startswith("tiny:"),
           f"--clip-model must look like NAME/PRETRAINED, got '{i.clip_model}'")
    _check(isinstance(g.steps, int) and g.steps >= 1, "--steps must be >= 1")
    _check(_num(g.guidance) and g.guidance >= 0, "--guidance must be >= 0")
    _check(g.seed_mode in ("fixed", "per-frame"), "--seed-mode must be 'fixed' or 'per-frame'")
    _check(isinstance(g.seed, int) and g.seed >= 0, "--seed must be a whole number >= 0")
    _check(
        g.strength is None or (_num(g.strength) and 0 < g.strength <= 1),
        "--strength must be in (0, 1]",
    )
    for name in ("width", "height"):
        value = getattr(g, name)
        _check(
            value is None or (isinstance(value, int) and value >= 64 and value % 8 == 0),
            f"--{name} must be a multiple of 8, at least 64",
        )
    _check((g.width is None) == (g.height is None), "give --width and --height together")
    _check(isinstance(g.batch_size, int) and g.batch_size >= 1, "--batch-size must be >= 1")
    _check(isinstance(g.compile, bool), f"generate.compile must be true or false, got {g.compile!r}")
    _check(not (g.vae and g.preview_vae), "give --vae or --preview-vae, not both")
    _check(a.source in ("dreams", "frames") or re.fullmatch(r"dreams_r\d{2,}", str(a.source)) is not None,
           "--from must be 'dreams', 'frames' or a telephone round's folder such as dreams_r02")
    _check(a.transition in ("cut", "crossfade"), "--transition must be 'cut' or 'crossfade'")
    _check(_num(a.out_fps) and a.out_fps > 0, "--out-fps must be a positive number")
    _validate_telephone(s.telephone)
    _check(s.device in ("auto", "cpu", "mps") or str(s.device).startswith("cuda"),
           f"unknown --device '{s.device}' (auto, cpu, cuda, cuda:N, mps)")
    dtypes = ("auto", "fp32", "fp16", "bf16", "float32", "float16", "bfloat16")
    _check(s.dtype in dtypes, f"unknown --dtype '{s.dtype}' (choose from {', '.join(dtypes)})")


def _validate_telephone(t: TelephoneSettings) -> None:
    _check(isinstance(t.steps, int) and not isinstance(t.steps, bool) and t.steps >= 1,
           f"--steps must be a whole number >= 1 (how many times the picture goes round), got {t.steps!r}")
    modes = ("caption", "fast", "classic", "best", "negative")
    _check(t.mode in modes, f"unknown --mode '{t.mode}' (choose from {', '.join(modes)})")
    _check(_num(t.hold) and t.hold > 0, f"--hold must be a positive number of seconds, got {t.hold!r}")
    _check(_num(t.crossfade) and 0 <= t.crossfade < t.hold,
           f"--crossfade must be >= 0 and shorter than --hold ({t.hold} s), got {t.crossfade!r}")
    _check(isinstance(t.strip_height, int) and 64 <= t.strip_height <= 4096,
           f"--strip-height must be a whole number of pixels from 64 to 4096, got {t.strip_height!r}")


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)





def replace_section(settings: Settings, section: str, **changes: Any) -> Settings:
    new = dataclasses.replace(settings)
    setattr(new, section, dataclasses.replace(getattr(settings, section), **changes))
    return new
