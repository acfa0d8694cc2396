"""The one A1111 `parameters` writer for painted pictures (dreams, in-betweens, telephone steps)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..backends import Painted


def a1111_text(params: dict[str, Any], painted: Painted) -> str:
    """The one A1111 `parameters` writer: a paint unit's text, with the painter's sampler and model."""
    from ..pngmeta import a1111_parameters

    p = params
    extra: dict[str, object] = dict(p.get("leading") or {})  # the telephone's step comes first
    if p["strength"]:
        extra["Denoising strength"] = p["strength"]
    if p["lora"]:
        extra["Lora"] = p["lora"]
    if p.get("color_coherence"):
        extra["Color coherence"] = p["color_coherence"].upper()
    extra.update(_option_fields(p))
    extra.update(p.get("trailing") or {})  # an in-between's keyframe B and t (stages/morph.py)
    return a1111_parameters(p["prompt"], p["negative_prompt"], p["steps"], painted.sampler, p["guidance"],
                            p["seed"], p["width"], p["height"], painted.model, extra)


def _option_fields(p: dict[str, Any]) -> dict[str, object]:
    """The refiner, the ControlNet and the style image as A1111 (and its ControlNet extension) write them."""
    from ..models.controlnet import control_module
    from ..models.painter import short_name

    out: dict[str, object] = {}
    if p.get("refiner"):
        out.update({"Refiner": short_name(p["refiner"]), "Refiner switch at": p["refiner_switch"]})
    if p.get("controlnet"):
        module, model = control_module(p["controlnet"])
        out["ControlNet 0"] = f"Module: {module}, Model: {short_name(model)}, Weight: {float(p['control_scale'])}"
    if p.get("style_image"):  # as A1111's ControlNet extension names its ip-adapter units
        out["IP-Adapter"] = f"Model: {p['ip_adapter']}, Image: {Path(p['style_image']).name}, " \
                            f"Weight: {float(p['style_image_scale'])}"
    return out
