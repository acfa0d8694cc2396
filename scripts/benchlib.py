"""Helpers shared by the benchmark scripts: synthetic clips, run folders, timing, load counting, tables.

Nothing here changes what the stages do: counting model loads wraps `from_pretrained` /
`create_model_and_transforms` for the length of a `with` block and calls the original every time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from video2dream.media import ffmpeg_path  # noqa: E402


def offline_env() -> None:
    """No downloads: the tiny models are built locally, full-size ones come from a local folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def make_clip(path: Path, seconds: float, size: str = "640x480", audio: bool = False) -> Path:
    """A synthetic clip from ffmpeg's testsrc2 (moving colours, so every frame differs)."""
    cmd = [ffmpeg_path(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
           f"testsrc2=size={size}:rate=25:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=duration={seconds}", "-c:a", "aac", "-shortest"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)
    return path


def sync() -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def timer(into: dict[str, float], name: str) -> Iterator[None]:
    sync()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        sync()
        into[name] = into.get(name, 0.0) + time.perf_counter() - t0


@contextlib.contextmanager
def count_loads() -> Iterator[Counter]:
    """Count model loads by class while the block runs: from_pretrained of diffusers pipelines and
    models, transformers models, and open_clip's factory. The originals run unchanged."""
    import diffusers
    import open_clip
    import transformers

    counts: Counter = Counter()
    patched: list[tuple[object, str, object]] = []

    def wrap_classmethod(cls: type, name: str) -> None:
        original = cls.__dict__[name]  # the classmethod object itself

        def counted(klass, *args, **kwargs):
            counts[klass.__name__] += 1
            return original.__func__(klass, *args, **kwargs)

        setattr(cls, name, classmethod(counted))
        patched.append((cls, name, original))

    wrap_classmethod(diffusers.DiffusionPipeline, "from_pretrained")
    wrap_classmethod(diffusers.ModelMixin, "from_pretrained")
    wrap_classmethod(transformers.PreTrainedModel, "from_pretrained")
    create = open_clip.create_model_and_transforms

    def counted_create(*args, **kwargs):
        counts["open_clip " + str(args[0] if args else kwargs.get("model_name"))] += 1
        return create(*args, **kwargs)

    open_clip.create_model_and_transforms = counted_create
    patched.append((open_clip, "create_model_and_transforms", create))
    try:
        yield counts
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


@contextlib.contextmanager
def time_inside(owner: type, name: str) -> Iterator[dict[str, float]]:
    """Time spent inside the method owner.name while the block runs, and when it was first called:
    {"inside": seconds, "first": perf_counter()}. Measuring only: the method runs unchanged."""
    clock = {"inside": 0.0, "first": 0.0}
    original = getattr(owner, name)

    def timed(self, *args, **kwargs):
        t = time.perf_counter()
        if not clock["first"]:
            clock["first"] = t
        try:
            return original(self, *args, **kwargs)
        finally:
            clock["inside"] += time.perf_counter() - t

    setattr(owner, name, timed)
    try:
        yield clock
    finally:
        setattr(owner, name, original)


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A plain-text table: the first column left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(title)
    for n, r in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)
