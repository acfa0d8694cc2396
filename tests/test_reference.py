"""The reference pages in docs/reference/ are what the code says: regenerate them after a change."""

from __future__ import annotations

from pathlib import Path

from video2dream.reference import pages

DOCS = Path(__file__).resolve().parent.parent / "docs" / "reference"


def test_the_checked_in_references_are_generated_from_the_code():
    for name, text in pages().items():
        checked_in = (DOCS / name).read_text(encoding="utf-8")
        assert checked_in == text, f"docs/reference/{name} is out of date: run `python scripts/gen_reference.py`"


def test_every_setting_is_in_the_settings_reference():
    from dataclasses import fields

    from video2dream.settings import SECTIONS, Settings

    page = pages()["settings.md"]
    for section in SECTIONS:
        for f in fields(getattr(Settings(), section)):
            assert f"| `{section}.{f.name}` |" in page
    row = "| `assemble.transition` | `--transition` (assemble, run) | `cut` | cut, crossfade, flow, morph | key |"
    assert row in page
