"""The reference pages, written from the code so they cannot drift: the settings table from the
declarations in settings.py (role, default, range or choices) and the parser's flags, the command-line
reference from the parser's own --help. `python scripts/gen_reference.py` writes docs/reference/;
tests/test_reference.py fails when the checked-in pages differ."""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, fields
from pathlib import Path

from . import settings as S

PAGES = ("settings.md", "cli.md")
WIDTH = 100  # --help is wrapped at the terminal's width: fixed here, so the pages are the same anywhere


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flags(parser: argparse.ArgumentParser) -> dict[str, dict[str, list[str]]]:
    """Setting path -> {flag: [commands that take it]}, and each path's help text (first seen)."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, command in _commands(parser).items():
        for action in command._actions:
            if action.dest.startswith("set:") and action.option_strings:
                flag = next(o for o in action.option_strings if o.startswith("--"))
                out.setdefault(action.dest[4:], {}).setdefault(flag, []).append(name)
    return out


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    out: dict[str, str] = {}
    for command in _commands(parser).values():
        for action in command._actions:
            if action.dest.startswith("set:") and action.help:
                out.setdefault(action.dest[4:], action.help)
    return out


def _paths() -> list[tuple[str, object]]:
    """(path, dataclass field) of every setting, top-level ones first, in declaration order."""
    out = [(f.name, f) for f in fields(S.Settings) if f.name not in S.SECTIONS]
    for section in S.SECTIONS:
        out += [(f"{section}.{g.name}", g) for g in fields(type(getattr(S.Settings(), section)))]
    return out


def _default(f) -> str:
    value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    return S._shown(value)


def _allowed(path: str) -> str:
    if path in S.CHOICES:
        return ", ".join(S.CHOICES[path])
    return next((what for p, _, what in S.RANGES if p == path), "")


def _role(f) -> str:
    role = S.role_of(f)
    if f.metadata.get("new_if_unset"):
        role += ", in keys only when set"
    tags = [t for t in f.metadata.get("tags", ()) if t in ("refiner", "controlnet", "depth")]
    if tags:
        role += f", in keys only with --{tags[0]}"
    return role


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_page(parser: argparse.ArgumentParser) -> str:
    flags, helps = _flags(parser), _helps(parser)
    lines = [
        "# Settings reference",
        "",
        "Generated from `video2dream/settings.py` and the command-line parser by `scripts/gen_reference.py`;",
        "do not edit by hand. Every setting can be given in a config file or preset by its path",
        "(`generate: {steps: 20}`), and most by a flag. **Role** says what changing it redoes:",
        "`key` redoes its stage's work, `speed` nothing, `per-unit` the units it changes, `per-call` applies",
        "to one command and is never saved (see the guide's \"Settings\" page).",
        "",
        "| setting | flag | default | allowed | role | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for path, f in _paths():
        shown = ", ".join(f"`{flag}`" + ("" if len(cmds) == len(_commands(parser)) else f" ({', '.join(cmds)})")
                          for flag, cmds in flags.get(path, {}).items()) or "(config file)"
        lines.append(f"| `{path}` | {_cell(shown)} | `{_cell(_default(f))}` | {_cell(_allowed(path))} "
                     f"| {_role(f)} | {_cell(helps.get(path, ''))} |")
    return "\n".join(lines) + "\n"


def cli_page(parser: argparse.ArgumentParser) -> str:
    lines = ["# Command-line reference", "",
             "Generated from the parser by `scripts/gen_reference.py`; do not edit by hand. The same text is",
             "`video2dream COMMAND --help`.", "", "```text", parser.format_help().rstrip(), "```"]
    for name, command in _commands(parser).items():
        lines += ["", f"## {name}", "", "```text", command.format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    from .cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        parser = build_parser()
        return {"settings.md": settings_page(parser), "cli.md": cli_page(parser)}
    finally:
        if old is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = old


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in pages().items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        out.append(path)
    return out
