"""Every command in the bash blocks of the README and the guide (docs/) runs as written, on the tiny preset.

Each block is played in a fresh folder holding the files the README names (clip.mp4, song.wav,
cover.jpg, look.jpg, covers/), like a reader trying it out. The real models cannot be downloaded here, so the
run folders a block names start with the tiny preset's settings saved in them (what `--preset tiny`
would leave behind), and `--preset default` reads `--preset tiny`; every other word is the README's.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT, cli, make_clip

from video2dream.settings import resolve

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


# The README and the guide's pages (docs/*.md): every command they show is run (the generated
# references in docs/reference/ show no commands).
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_blocks() -> list[list[list[str]]]:
    """The `video2dream ...` commands of each bash block of the README and the guide, comments cut
    off; a block that repeats an earlier one word for word is run once."""
    blocks: list[list[list[str]]] = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            lines = block.replace("\\\n", " ").splitlines()  # a command continued with a backslash
            commands = [shlex.split(line, comments=True) for line in lines
                        if line.strip().startswith("video2dream ")]
            if commands and commands not in blocks:
                blocks.append(commands)
    return blocks


BLOCKS = readme_blocks()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the README's examples name: a 12 s clip with sound (a beep each second: beats for --at
    beats), a song, a cover and a folder of covers."""
    folder = tmp_path_factory.mktemp("readme-media")
    make_clip(folder / "clip.mp4", "testsrc2=size=192x108:rate=10:duration=12",
              "sine=frequency=330:beep_factor=4:duration=12",
              args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"))
    make_clip(folder / "song.wav", "sine=frequency=550:duration=20")
    make_clip(folder / "cover.jpg", "testsrc2=size=160x160", args=("-frames:v", "1"))
    make_clip(folder / "look.jpg", "mandelbrot=size=96x96", args=("-frames:v", "1"))  # a style image
    (folder / "covers").mkdir()
    for name, source in (("a.png", "mandelbrot=size=128x96"), ("b.jpg", "smptebars=size=96x128")):
        make_clip(folder / "covers" / name, source, args=("-frames:v", "1"))
    return folder


def _run_folders(commands: list[list[str]]) -> set[str]:
    folders = set()
    for argv in commands:
        args = argv[1:]
        if args[0] in ("run", "extract", "telephone"):
            flag = next(f for f in ("-o", "--output", "--output_prefix") if f in args)
            folders.add(args[args.index(flag) + 1])
        elif args[0] not in ("run", "extract", "telephone"):
            folders.add(args[1])
    return folders


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3 and sum(map(len, BLOCKS)) >= 15


@pytest.mark.parametrize("commands", BLOCKS, ids=[" ".join(b[0][1:3]) for b in BLOCKS])
def test_readme_block_runs_as_written(commands: list[list[str]], media: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    for item in media.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy)(item, tmp_path / item.name)
    tiny = resolve(preset="tiny").to_dict()
    for per_call in ("source", "output"):  # never saved (see pipeline._saver)
        tiny["assemble"].pop(per_call)
    for folder in _run_folders(commands):
        from video2dream.runfolder import RunFolder

        RunFolder(tmp_path / folder).save_settings(tiny)
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        argv = ["tiny" if word == "default" and prev == "--preset" else word
                for prev, word in zip(["", *argv[:-1]], argv, strict=True)]
        assert argv[0] == "video2dream"
        code = cli(*argv[1:])
        assert code == 0, f"`{shlex.join(argv)}` failed (exit {code}) in {os.getcwd()}"
