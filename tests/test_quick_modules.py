"""Cheap tests for the modules that only slow tests reached, so that the quick suite (`pytest -m "not
slow"`) runs code of every module of the package: the Ray backend's parts that need no cluster, the
candidates' row ranges, the tiny IP-Adapter's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from video2dream.backends.base import Caption, Painted
from video2dream.errors import UserError

NAMES = [f"{n:06d}.png" for n in range(1, 21)]


def test_ray_results_travel_as_plain_columns_and_come_back_the_same() -> None:
    from video2dream.backends import ray as rb

    picture = Image.new("RGB", (5, 3), (10, 200, 30))
    back = rb.from_row("paint", rb.to_row(Painted(picture, "Euler", "tiny:sdxl")))
    assert (back.sampler, back.model, back.image.tobytes()) == ("Euler", "tiny:sdxl", picture.tobytes())
    caption = Caption("a cat", "a cat, oil", "blurry")
    assert rb.from_row("caption", rb.to_row(caption)) == caption


def test_ray_missing_is_one_line_naming_the_backend_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from video2dream.backends import ray as rb
    from video2dream.settings import Settings

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(UserError) as e:
        rb.RayBackend.check_ready(Settings())
    assert str(e.value).startswith("backend ray needs Ray, which is not installed here")
    assert e.value.render({"backend": "--backend"}).endswith("or use --backend local")


@pytest.mark.parametrize("text, frames", [(None, NAMES), ("3", ["000003.png"]),
                                          ("2, 5-7", ["000002.png", "000005.png", "000006.png", "000007.png"])])
def test_candidate_rows(text: str | None, frames: list[str]) -> None:
    from video2dream.stages.variants import parse_rows, variant_name

    assert parse_rows(text, NAMES) == frames
    assert variant_name("000012.png", 3) == "000012_03.png"


@pytest.mark.parametrize("text, words", [("7-5", "give frame numbers and ranges"), ("x", "such as 12,15-18"),
                                         ("25", "there is no frame 25 (frames are numbered 1 to 20)"),
                                         ("18-99", "there is no frame 21 ")])
def test_candidate_rows_refused(text: str, words: str) -> None:
    from video2dream.stages.variants import parse_rows

    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_rows(text, NAMES)


def test_the_tiny_ip_adapter_has_a_weight_pair_per_cross_attention_layer(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from video2dream.models import ip_adapter

    ip_adapter.build_tiny_ip_adapter(tmp_path)
    weights = load_file(next((tmp_path / ip_adapter.TINY_SUBFOLDER).rglob("*.safetensors")))
    assert any(k.startswith("ip_adapter.") for k in weights) and any(k.startswith("image_proj.") for k in weights)
