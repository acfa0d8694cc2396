"""Where models come from: Hugging Face ids or local folders, and the built-in tiny test models.

Ids starting with "tiny:" name tiny randomly initialised models of the real architectures. They are
built on first use into the cache folder, saved like the hub's, and then loaded through the same
`from_pretrained` / open_clip code as any real model.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import UserError

# name -> (module, builder); a builder takes an empty folder and fills it.
TINY_MODELS: dict[str, tuple[str, str]] = {
    "tiny:sdxl": ("video2dream.models.tiny_sdxl", "build_tiny_sdxl"),
    "tiny:taesdxl": ("video2dream.models.tiny_sdxl", "build_tiny_taesdxl"),  # for --preview-vae
    "tiny:blip": ("video2dream.models.tiny", "build_tiny_blip"),
    "tiny:clip": ("video2dream.models.tiny", "build_tiny_clip"),
}
TINY_VERSION = "v1"  # bump when a builder changes, so old caches are not reused


def cache_dir() -> Path:
    """$VIDEO2DREAM_CACHE, else $XDG_CACHE_HOME/video2dream, else ~/.cache/video2dream."""
    explicit = os.environ.get("VIDEO2DREAM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "video2dream"


def is_tiny(name: str) -> bool:
    return name.startswith("tiny:")


def tiny_model_dir(name: str) -> Path:
    """The folder of a tiny model, built on first use (atomically: built aside, then renamed)."""
    if name not in TINY_MODELS:
        known = ", ".join(TINY_MODELS)
        raise UserError(f"unknown tiny model '{name}' (known: {known})")
    dest = cache_dir() / "tiny" / f"{name.split(':', 1)[1]}-{TINY_VERSION}"
    if dest.is_dir():
        return dest
    module, func = TINY_MODELS[name]
    builder: Callable[[Path], None] = getattr(importlib.import_module(module), func)
    work = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        builder(work)
        try:
            os.replace(work, dest)
        except OSError:
            if not dest.is_dir():  # another process may have won the race; that is fine
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def resolve(name: str) -> str:
    """A tiny model's local folder, or the id / path as given (for from_pretrained)."""
    if is_tiny(name):
        return str(tiny_model_dir(name))
    return name


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def loading(kind: str, name: str) -> Iterator[None]:
    """Turn the many ways a load can fail (no such repo, offline, no cache) into one clear line."""
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        if os.environ.get("VIDEO2DREAM_DEBUG"):
            raise
        where = "a local folder" if Path(name).exists() else "a Hugging Face model id"
        hint = ("it is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading"
                if offline() else "check the name, your network, or the HF cache (HF_HOME)")
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
        raise UserError(f"cannot load {kind} '{name}' ({where}): {hint} [{detail}]") from e
