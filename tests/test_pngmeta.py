"""The A1111 `parameters` text and PNG text chunks."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from video2dream.pngmeta import (
    a1111_parameters,
    parse_parameters,
    read_parameters,
    read_png_text,
    save_png,
)

SDXL = dict(steps=30, sampler="Euler", cfg_scale=7, seed=123, width=1024, height=1024,
            model="sd_xl_base_1.0")


def test_format_is_a1111s_exactly() -> None:
    text = a1111_parameters("a cat, masterpiece", "blurry, lowres", **SDXL)
    assert text == (
        "a cat, masterpiece\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 30, Sampler: Euler, CFG scale: 7.0, Seed: 123, Size: 1024x1024, "
        "Model: sd_xl_base_1.0"
    )


def test_no_negative_line_when_empty_and_extras_quoted_like_a1111() -> None:
    text = a1111_parameters(
        "a (cat:1.2)", "", steps=4, sampler="Euler a", cfg_scale=5.5, seed=7, width=1344,
        height=768, model="tiny-sdxl",
        extra={"Denoising strength": 0.5, "Lora hashes": "add_detail: 7c6bad76eb54",
               "Skipped": None, "Version": "v1.10.1"},
    )
    assert text == (
        "a (cat:1.2)\n"
        "Steps: 4, Sampler: Euler a, CFG scale: 5.5, Seed: 7, Size: 1344x768, Model: tiny-sdxl, "
        'Denoising strength: 0.5, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
    )


def test_model_with_a_colon_is_quoted() -> None:
    text = a1111_parameters("p", "", **{**SDXL, "model": "tiny:sdxl"})
    assert text.endswith('Model: "tiny:sdxl"')
    assert parse_parameters(text)["Model"] == "tiny:sdxl"


def test_bad_extra_key_is_refused() -> None:
    with pytest.raises(ValueError):
        a1111_parameters("p", "", **SDXL, extra={"x": 1})


def test_parses_a_real_a1111_text() -> None:
    text = (
        "masterpiece, best quality, 1girl, (smile:1.1)\n"
        "Negative prompt: (worst quality:1.4), lowres\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3285740585, Size: 512x768, "
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.5, '
        'Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.6.0'
    )
    assert parse_parameters(text) == {
        "prompt": "masterpiece, best quality, 1girl, (smile:1.1)",
        "negative_prompt": "(worst quality:1.4), lowres",
        "Steps": "20", "Sampler": "DPM++ 2M Karras", "CFG scale": "7", "Seed": "3285740585",
        "Size": "512x768", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly",
        "Denoising strength": "0.5", "Lora hashes": "add_detail: 7c6bad76eb54",
        "Version": "v1.6.0",
    }


NASTY = [
    "",
    "a cat",
    "a cat, sitting on a mat, 8k, trending on artstation",
    'a "quoted" word, and \'single\' ones, and a lone "',
    "colons: everywhere: (cat:1.3), [dog:cat:0.5], Steps: 99, Seed: 1",
    "line one\nline two\n\nline four after an empty line",
    "Crème brûlée à la carte — 日本語のプロンプト, emoji 🐱🎨, Ελληνικά",
    "back\\slash \\n not a newline, {braces}, <lora:x:0.8>, 50% off; tab\tinside",
    "mentions Negative prompt: in the middle of a line",
    "Steps: 1, Sampler: x, CFG scale: 1, Seed: 2, Size: 8x8",  # a settings-like prompt
    "ends with a comma,",
]


@pytest.mark.parametrize("prompt", NASTY)
@pytest.mark.parametrize("negative", ["", "blurry, lowres", "bad\nhands, \"ugly\" 😱"])
def test_round_trip(prompt: str, negative: str) -> None:
    extra = {"Denoising strength": 0.35, "Note": 'a, b: "c"\nd', "Spaced": " x "}
    text = a1111_parameters(prompt, negative, steps=25, sampler="DPM++ 2M Karras",
                            cfg_scale=6.5, seed=4294967295, width=1152, height=896,
                            model="my model, v2", extra=extra)
    got = parse_parameters(text)
    assert got["prompt"] == prompt
    assert got["negative_prompt"] == negative
    assert got["Steps"] == "25" and got["Seed"] == "4294967295" and got["Size"] == "1152x896"
    assert got["Sampler"] == "DPM++ 2M Karras" and got["CFG scale"] == "6.5"
    assert got["Model"] == "my model, v2"
    assert got["Denoising strength"] == "0.35"
    assert got["Note"] == 'a, b: "c"\nd' and got["Spaced"] == " x "


def test_text_without_settings_line_is_all_prompt() -> None:
    assert parse_parameters("just a prompt, really") == {
        "prompt": "just a prompt, really", "negative_prompt": ""}


def _image() -> Image.Image:
    return Image.radial_gradient("L").convert("RGB").resize((64, 48))


def test_save_png_atomic_and_readable_by_pil(tmp_path: Path) -> None:
    path = tmp_path / "dreams" / "000001.png"
    text = a1111_parameters("a cat, on a mat", "blurry", **SDXL)
    save_png(_image(), path, text, extra={"video2dream": '{"key": "abc"}'})
    assert sorted(p.name for p in path.parent.iterdir()) == ["000001.png"]
    with Image.open(path) as im:
        assert im.text["parameters"] == text
        assert im.text["video2dream"] == '{"key": "abc"}'
        assert im.size == (64, 48)
    assert b"tEXt" in path.read_bytes() and b"iTXt" not in path.read_bytes()
    assert read_png_text(path) == {"parameters": text, "video2dream": '{"key": "abc"}'}
    assert read_parameters(path) == text


def test_unicode_goes_to_itxt(tmp_path: Path) -> None:
    path = tmp_path / "u.png"
    text = a1111_parameters("猫 🐱, crème", "", **SDXL)
    save_png(_image(), path, text, extra={"latin": "café"})
    data = path.read_bytes()
    assert b"iTXt" in data and b"tEXt" in data  # parameters: iTXt; "latin": tEXt
    with Image.open(path) as im:
        assert im.text["parameters"] == text and im.text["latin"] == "café"
    assert read_parameters(path) == text
    assert parse_parameters(read_parameters(path) or "")["prompt"] == "猫 🐱, crème"


def test_overwrite_keeps_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "d.png"
    save_png(_image(), path, "old\nSteps: 1, Sampler: Euler, CFG scale: 1.0")
    with pytest.raises(OSError):
        save_png(_image(), path, "new", compress_level=99)  # zlib refuses the level
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]
    assert read_parameters(path).startswith("old")
    save_png(_image(), path, "new")
    assert read_parameters(path) == "new"


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_reader_finds_chunks_after_the_pixels_and_never_decodes_them(tmp_path: Path) -> None:
    path = tmp_path / "late.png"
    save_png(_image(), path, "early")
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start:start + 8] = b"\xff" * 8  # the pixels are now garbage: only a decoder would notice
    late = (_chunk(b"zTXt", b"ztext\0\0" + zlib.compress(b"compressed latin-1 \xe9"))
            + _chunk(b"iTXt", b"itext\0\1\0en\0\0" + zlib.compress("ütf-8 ✓".encode())))
    end = data.index(b"IEND") - 4
    path.write_bytes(bytes(data[:end]) + late + bytes(data[end:]))
    assert read_png_text(path) == {"parameters": "early", "ztext": "compressed latin-1 é",
                                   "itext": "ütf-8 ✓"}


def test_read_missing_or_not_png(tmp_path: Path) -> None:
    assert read_parameters(tmp_path / "none.png") is None
    (tmp_path / "x.png").write_bytes(b"GIF89a not a png")
    assert read_parameters(tmp_path / "x.png") is None
    with pytest.raises(ValueError):
        read_png_text(tmp_path / "x.png")
    save_png(_image(), tmp_path / "plain.png", "p")
    (tmp_path / "cut.png").write_bytes((tmp_path / "plain.png").read_bytes()[:60])
    assert read_png_text(tmp_path / "cut.png") in ({}, {"parameters": "p"})


def test_pngmeta_does_not_import_torch() -> None:
    code = "import sys, video2dream.pngmeta; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
