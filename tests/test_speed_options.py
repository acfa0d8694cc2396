"""generate's speed options: flags, settings, keys (a speed knob never repaints a dream)."""

from __future__ import annotations

import pytest

from video2dream.cli import build_parser, overrides
from video2dream.errors import UserError
from video2dream.settings import KEY, PER_UNIT, GenerateSettings, inactive_tags, key_fields, resolve


def generate_key_fields(g: GenerateSettings) -> dict:
    """generate's settings as keys see them (the dream's own and its per-frame ones)."""
    return key_fields(g, roles=(KEY, PER_UNIT), without=inactive_tags(g))


def test_flags_reach_the_settings() -> None:
    args = build_parser().parse_args(["generate", "runs/x", "--compile", "--preview-vae", "tiny:taesdxl"])
    s = resolve(overrides=overrides(args))
    assert s.generate.compile is True and s.generate.preview_vae == "tiny:taesdxl"
    assert resolve().generate.compile is False and resolve().generate.preview_vae is None


def test_compile_is_not_in_the_key_and_unset_new_knobs_keep_old_keys() -> None:
    import dataclasses

    g = GenerateSettings()
    old = dataclasses.asdict(g)
    later = ("refiner", "refiner_switch", "prompt_weighting", "controlnet", "control_scale", "depth_model",
             "color_coherence", "style", "negative_style", "style_image", "style_image_scale", "ip_adapter",
             "ip_adapter_subfolder", "ip_adapter_weight")
    for new in ("compile", "preview_vae", "batch_size", *later):  # batch_size: always left out, by generate itself
        old.pop(new)
    assert generate_key_fields(g) == old  # dreams painted before these knobs stay current
    assert generate_key_fields(dataclasses.replace(g, compile=True)) == old
    assert generate_key_fields(dataclasses.replace(g, preview_vae="madebyollin/taesdxl")) != old


def test_vae_and_preview_vae_exclude_each_other() -> None:
    with pytest.raises(UserError, match="not both"):
        resolve(overrides={"generate": {"vae": "a", "preview_vae": "b"}})
    with pytest.raises(UserError, match="compile"):
        resolve(overrides={"generate": {"compile": "yes"}})


@pytest.mark.slow
def test_painter_with_preview_vae_and_tuning_paints() -> None:
    from video2dream.models.painter import Painter

    painter = Painter("tiny:sdxl", "cpu", preview_vae="tiny:taesdxl", tune=True)
    assert painter.tuned and type(painter.pipe.vae).__name__ == "AutoencoderTiny"
    images = painter.paint(["a cat"], [""], [1], 64, 64, 1, 5.0)
    assert images[0].size == (64, 64)
