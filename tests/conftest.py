"""Shared fixtures: synthetic clips from ffmpeg's lavfi sources, the sample media folder, a cache."""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "samples"

# Tiny models and label embeddings are cached between test sessions (CI starts with none).
os.environ.setdefault("VIDEO2DREAM_CACHE", str(ROOT / ".test-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# diffusers and transformers bind their log handler to whatever sys.stderr is when first used; if
# that is one test's capsys stream, later tests log into a closed file ("--- Logging error ---").
# Configure them now, against the session's stream.
from diffusers.utils import logging as _diffusers_logging  # noqa: E402
from transformers.utils import logging as _transformers_logging  # noqa: E402

_diffusers_logging.get_logger("diffusers")
_transformers_logging.get_logger("transformers")


def ffmpeg() -> str:
    from video2dream.media import ffmpeg_path

    return ffmpeg_path()


def make_clip(path: Path, *inputs: str, args: tuple[str, ...] = ()) -> Path:
    """ffmpeg -f lavfi inputs -> path; e.g. make_clip(p, 'testsrc2=size=320x240:rate=25:duration=3')."""
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y"]
    for source in inputs:
        cmd += ["-f", "lavfi", "-i", source]
    cmd += list(args) + [str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def av_clip(clip_dir: Path) -> Path:
    """3.5 s, 320x240 at 25 fps, with a 440 Hz tone: the everyday test clip."""
    return make_clip(
        clip_dir / "av.mp4",
        "testsrc2=size=320x240:rate=25:duration=3.5",
        "sine=frequency=440:sample_rate=44100:duration=3.5",
        args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"),
    )


@pytest.fixture(scope="session")
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip("../shared/samples is absent")
    return SAMPLES


def run_ffmpeg(*args: str | Path) -> bytes:
    """Run ffmpeg with these arguments (quietly, overwriting); its stdout."""
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)]
    return subprocess.run(cmd, check=True, capture_output=True).stdout


def cli(*args: str | Path) -> int:
    """Run the command line in-process; its exit code."""
    from video2dream.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def one_line_error(code: int, err: str, *words: str) -> None:
    """The CLI's failure: exit 1 and one `video2dream: error:` line holding every word."""
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("video2dream: error:"), err
    for w in words:
        assert w in err, err


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file and folder under path (hidden ones too), or path itself, with its bytes."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second torch thread, and on busy cores (tests in parallel)
    OpenMP's spinning threads make them 10-20x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pixels(path: Path):
    """A picture's RGB pixels (numpy), to compare pictures whatever their PNG text chunks."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def copy_run(src: Path, dest: Path):
    """A copy of the run folder src at dest (its links as links), as a RunFolder."""
    import shutil

    from video2dream.runfolder import RunFolder

    shutil.copytree(src, dest, symlinks=True)
    return RunFolder(dest)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (kind, data), for tests that damage one on purpose."""
    out, pos = [], 8
    while pos < len(data):
        n, kind = struct.unpack_from(">I4s", data, pos)
        out.append((kind, data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """PNG bytes with every chunk's CRC right, whatever its data."""
    out = b"\x89PNG\r\n\x1a\n"
    for kind, data in chunks:
        out += struct.pack(">I4s", len(data), kind) + data + struct.pack(">I", zlib.crc32(kind + data))
    return out
