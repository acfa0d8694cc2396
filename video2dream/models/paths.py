"""Model settings that name a local file or folder which is not there: one line naming the setting,
before any model (or torch) loads.

A value is taken for a path when it cannot be a Hugging Face id: it starts with `.`, `/` or `~`,
holds a backslash or more than one `/`, or ends like a weights file. `owner/name` (or a bare `name`)
is an id: whether the hub has it is hub.check_hub_reachable's and the load's question.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SettingError
from ..settings import Settings

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
SHOWN = 80  # characters of a value shown in the message


def looks_local(value: str) -> bool:
    """Whether value can only be a local path (never a hub id)."""
    path = Path(value)
    return (value.startswith((".", "/", "~")) or "\\" in value or value.count("/") > 1
            or path.suffix.lower() in WEIGHT_SUFFIXES)


def model_sources(settings: Settings, stages: tuple[str, ...] = ("interrogate", "generate")) -> list[tuple[str, str]]:
    """(setting, file or folder it names) of the stages' model settings that name local paths; tiny
    models, hub ids and unset options are left out."""
    from ..models.controlnet import control_module
    from ..models.painter import parse_lora

    i, g = settings.interrogate, settings.generate
    named: list[tuple[str, str | None]] = []
    if "interrogate" in stages:
        named.append(("interrogate.caption_model", i.caption_model))
        # NAME/PRETRAINED: PRETRAINED may be a weights file (a whole path is no open_clip name)
        arch, _, pretrained = i.clip_model.partition("/")
        named.append(("interrogate.clip_model", i.clip_model if not arch or looks_local(arch) else pretrained))
    if "generate" in stages:
        named += [("generate.model", g.model), ("generate.refiner", g.refiner), ("generate.vae", g.vae),
                  ("generate.preview_vae", g.preview_vae),
                  ("generate.lora", parse_lora(g.lora)[0] if g.lora else None)]
        if g.controlnet:
            module, model = control_module(g.controlnet)
            named.append(("generate.controlnet", model))
            if module == "depth":
                named.append(("generate.depth_model", g.depth_model))
    return [(setting, value) for setting, value in named
            if value and not value.startswith("tiny:") and looks_local(value)]


def check_model_paths(settings: Settings, stages: tuple[str, ...] = ("interrogate", "generate")) -> None:
    """A model setting naming a file or folder that is not there: one line naming the setting."""
    for setting, value in model_sources(settings, stages):
        if not Path(value).expanduser().exists():
            shown = value if len(value) <= SHOWN else value[:SHOWN] + "..."
            raise SettingError(setting, f"names a file or folder that does not exist: {shown}",
                               "give an existing path, or a Hugging Face id such as owner/name")
