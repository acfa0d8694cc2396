"""A chain's keys (what decides its pictures and captions; what decides its outputs), and the refusal
to touch a chain made from another input or with other settings."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from ..errors import UserError
from ..runfolder import RunFolder
from ..settings import KEY, PER_UNIT, Settings, inactive_tags, key_fields, replace_section, stable_hash
from .inputs import BACKGROUND
from .outputs import OUTPUTS
from .steps import read_step, step_name

CHAIN_VERSION = 1  # bump when the way a chain is made changes, so old steps are not reused


def chain_settings(settings: Settings) -> Settings:
    """The settings a chain runs with: interrogate's mode is telephone's (default caption)."""
    return replace_section(settings, "interrogate", mode=settings.telephone.mode)


def chain_key(settings: Settings, fingerprint: str, size: tuple[int, int]) -> tuple[str, dict[str, Any]]:
    """The key every step PNG carries: what decides the pictures and captions, nothing else
    (not --steps, --stop-at-fixed-point, the video's --hold, batch sizes or the device)."""
    # In caption mode CLIP is only used for the drift figures, made fresh each time.
    i = key_fields(settings.interrogate, without=("clip",) if settings.interrogate.mode == "caption" else ())
    # The chain is one unit: its seed rule and negative prompt as they are; the size is given as such.
    g = key_fields(settings.generate, roles=(KEY, PER_UNIT), without=("size", *inactive_tags(settings.generate)))
    parts = {"input": fingerprint, "size": list(size), "interrogate": i, "generate": g,
             "dtype": settings.dtype, "background": list(BACKGROUND), "version": CHAIN_VERSION}
    return stable_hash(parts), parts


def chain_outputs_key(key: str, target: int, settings: Settings, source_name: str) -> str:
    """The key of chain.csv, the strip, the drift figure and chain.mp4: the chain's, how many steps
    they show, telephone's KEY settings, and what they use of CLIP and of the video encoder."""
    a = settings.assemble
    return stable_hash(key, target, *key_fields(settings.telephone).values(), settings.interrogate.clip_model,
                       a.out_fps, a.crf, str(source_name))


def _changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}" if k != "input" else "the input image")
    return out


def check_same_chain(run: RunFolder, key: str, parts: dict[str, Any], force: bool) -> None:
    """Refuse to touch a chain made with other settings (or from another input) unless --force."""
    if force:
        return
    record = run.read_record("telephone")
    if record and record.get("key") != key:
        changed = _changes(record.get("parts") or {}, parts)
        what = "; ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise UserError(f"{run.root} holds a telephone chain made from another input or with other settings "
                        f"(changed: {what or 'unknown'}); give another -o folder, or add --force to start "
                        "this chain over")
    first = run.root / step_name(0)
    if not record and first.is_file() and read_step(first, key, 0) is None:
        raise UserError(f"{run.root} holds a step_000.png of another chain (or not of a chain); "
                        "give another -o folder, or add --force to start over")


def clear_chain(run: RunFolder) -> None:
    for p in run.root.glob("step_*.png"):
        if re.fullmatch(r"step_[0-9]{3,}\.png", p.name):
            p.unlink()
    for name in OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            (run.root / name).unlink()
    run.clear_record("telephone")
    run.clear_record("telephone-outputs")
