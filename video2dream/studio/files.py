"""What the review page reads from a run folder: the keyframes' table, the folder's own files (by
the tool's own names only), thumbnails and the waveform (cached under .video2dream/thumbs/)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..runfolder import OWN_PICTURES, RunFolder, write_bytes, write_text
from ..tables import FRAME_NAME

# The files the page may serve: a picture folder's frame, or one of the top-level outputs.
PICTURE_DIRS = re.compile(r"frames|dreams(_r[0-9]{2,})?|morphs|variants")
TOP_FILES = re.compile(r"dream(_r[0-9]{2,})?(_side_by_side)?\.mp4|dream_grid\.mp4|chain\.mp4"
                       r"|chain_strip\.png|index_strip\.png|drift\.png|step_[0-9]{3,}\.png")
THUMBS = "thumbs"
THUMB_HEIGHT = 72


class NotServed(UserError):
    """A path the page does not serve: not one of the folder's own names, a link, or absent."""


def own_file(run: RunFolder, relpath: str) -> Path:
    """The file for relpath, only if it is one of the tool's own names in the folder (FOLDER/NNNNNN.png,
    an in-between or a candidate, or a top-level output), no part of it a symbolic link, and a regular file."""
    parts = relpath.split("/")
    if len(parts) == 1 and TOP_FILES.fullmatch(parts[0]):
        chain = [parts[0]]
    elif len(parts) == 2 and PICTURE_DIRS.fullmatch(parts[0]) and OWN_PICTURES.fullmatch(parts[1]):
        chain = parts
    else:
        raise NotServed(f"{relpath[:80]!r} is not a file of the run folder")
    path = run.root
    for part in chain:
        path = path / part
        try:
            st = os.lstat(path)
        except OSError:
            raise NotServed(f"{relpath} does not exist") from None
        if stat.S_ISLNK(st.st_mode):
            raise NotServed(f"{relpath} is a symbolic link; the page serves only the run folder's own files")
    if not stat.S_ISREG(st.st_mode):
        raise NotServed(f"{relpath} is not a file")
    return path


def thumbnail(run: RunFolder, relpath: str) -> Path:
    """A small PNG of a picture, made on first request and kept in .video2dream/thumbs/ (named by the
    picture's size and time, so a repainted dream gets a new one and the old one is removed)."""
    from PIL import Image

    src = own_file(run, relpath)
    if not src.suffix == ".png":
        raise NotServed(f"{relpath} has no thumbnail")
    st = src.stat()
    folder = run.state_dir / THUMBS / src.parent.relative_to(run.root)
    dest = folder / f"{src.stem}-{st.st_mtime_ns}-{st.st_size}.png"
    if dest.is_file():
        return dest
    with Image.open(src) as im:
        im.thumbnail((max(1, THUMB_HEIGHT * im.width // max(1, im.height)), THUMB_HEIGHT))
        import io

        buf = io.BytesIO()
        im.convert("RGB").save(buf, "PNG")
    for old in folder.glob(f"{src.stem}-*.png") if folder.is_dir() else []:
        with contextlib.suppress(OSError):
            old.unlink()
    write_bytes(dest, buf.getvalue())
    return dest


def waveform(run: RunFolder, buckets: int = 2000) -> dict[str, Any]:
    """The soundtrack's peaks (max |sample| per bucket, 0-1) over its duration, computed once from
    ffmpeg's 8 kHz mono PCM and cached by the sound file's size and time."""
    import numpy as np

    from ..media import ffmpeg_path
    from ..settings import resolve
    from ..stages.assemble import audio_source

    try:
        sound = audio_source(run, resolve(run.saved_settings()).assemble.audio)
    except UserError as e:
        return {"peaks": [], "duration": 0, "says": str(e)}
    if sound.path is None:
        return {"peaks": [], "duration": 0, "says": sound.says}
    st = sound.path.stat()
    cache = run.state_dir / THUMBS / "waveform.json"
    ident = f"{sound.path}|{st.st_size}|{st.st_mtime_ns}|{buckets}"
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("ident") == ident:
            return data
    rate = 8000
    pcm = subprocess.run([ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-i", str(sound.path), "-vn",
                          "-ac", "1", "-ar", str(rate), "-f", "s16le", "-"], capture_output=True, check=False).stdout
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
    n = max(1, min(buckets, len(samples)))
    peaks = [round(float(abs(c).max()), 3) if len(c) else 0.0 for c in np.array_split(samples, n)] \
        if len(samples) else []
    data = {"ident": ident, "peaks": peaks, "duration": len(samples) / rate, "says": sound.says}
    write_text(cache, json.dumps(data))
    return data


# -- the keyframes ---------------------------------------------------------------------------------

_current_cache: dict[tuple[str, int, int, str], bool] = {}


def _dream_current(path: Path, key: str) -> bool:
    """generate's is_current (every chunk checked, the image inflated), remembered per file version."""
    from ..stages.generate import is_current

    try:
        st = path.stat()
    except OSError:
        return False
    ident = (str(path), st.st_mtime_ns, st.st_size, key)
    if ident not in _current_cache:
        _current_cache[ident] = is_current(path, key)
    return _current_cache[ident]


def _refused(run: RunFolder) -> set[str]:
    from ..tables import read_loose

    path = run.root / "refused.csv"
    if not path.is_file() or not path.stat().st_size:
        return set()
    with contextlib.suppress(UserError):
        return {str(r.get("filename")) for r in read_loose(path).to_dict("records")}
    return set()


def keyframes(run: RunFolder) -> list[dict[str, Any]]:
    """One entry per keyframe: name, time, kind, prompt, negative prompt, seed, the row's version, and
    its state: refused, missing (no row or no dream), stale (the dream is not its row's), edited (a
    hand-edited row whose dream is current) or current."""
    from ..settings import resolve
    from ..stages import generate, interrogate
    from ..tables import read_frames

    run.require()
    settings = resolve(run.saved_settings())
    frames = read_frames(run.frames_csv)
    names = frames["filename"].tolist()
    rows: dict[str, dict] = {}
    states: dict[str, str] = {}
    if run.prompts_csv.is_file():
        df = interrogate.read_prompts(run)
        rows = {r["filename"]: r for r in df.to_dict("records")}
        placed = interrogate.place_rows(df, interrogate.row_keys(run, settings, names),
                                        dict(zip(names, frames["time"], strict=True)))
        states = placed.states
    jobs: dict[str, Any] = {}
    with contextlib.suppress(UserError):
        jobs = {j.name: j for j in generate.plan(run, settings)[0]}
    refused = _refused(run)
    out = []
    for name, t, kind in zip(names, frames["time"], frames["kind"], strict=True):
        row = rows.get(name)
        job = jobs.get(name)
        dream = run.dreams_dir / name
        dream_state = ("missing" if not dream.is_file() else
                       "current" if job is not None and _dream_current(dream, job.key) else "stale")
        row_state = states.get(name, "missing")
        state = ("refused" if name in refused else "missing" if row is None or dream_state == "missing" else
                 "stale" if dream_state == "stale" or row_state == "stale" else
                 "edited" if row_state == "edited" else "current")
        out.append({"name": name, "time": float(t), "kind": kind, "state": state,
                    "row_state": row_state, "dream_state": dream_state,
                    "prompt": "" if row is None else str(row.get("prompt", "")),
                    "negative_prompt": "" if row is None else str(row.get("negative_prompt", "")),
                    "seed": None if job is None else job.seed,
                    "version": None if row is None else _version(run, name)})
    return out


def _version(run: RunFolder, name: str) -> str | None:
    from .library import row_version

    rows = _rows_cache(run)
    return row_version(rows[name]) if name in rows else None


_rows_memo: dict[str, tuple[tuple[int, int], dict[str, dict]]] = {}


def _rows_cache(run: RunFolder) -> dict[str, dict]:
    """prompts.csv as the row edit reads it (the version must be computed on the same cells)."""
    from .library import read_rows

    st = run.prompts_csv.stat()
    ident = (st.st_mtime_ns, st.st_size)
    memo = _rows_memo.get(str(run.root))
    if memo is None or memo[0] != ident:
        memo = (ident, read_rows(run))
        _rows_memo[str(run.root)] = memo
    return memo[1]


def keyframe(run: RunFolder, name: str) -> dict[str, Any]:
    """One keyframe's entry plus its dream's A1111 parameters (parsed and as text)."""
    from ..pngmeta import parse_parameters, read_parameters

    if not FRAME_NAME.fullmatch(name):
        raise NotServed(f"{name[:80]!r} is not a keyframe name")
    entry = next((k for k in keyframes(run) if k["name"] == name), None)
    if entry is None:
        raise NotServed(f"{name} is not a keyframe of this run")
    text = None
    with contextlib.suppress(NotServed):
        text = read_parameters(own_file(run, f"dreams/{name}"))
    from .library import candidates

    return {**entry, "parameters_text": text, "parameters": parse_parameters(text) if text else {},
            "candidates": candidates(run, name)}


def chain(run: RunFolder) -> dict[str, Any] | None:
    """A telephone chain's steps (chain.csv) and its pictures, when the folder holds one."""
    from ..tables import read_loose

    path = run.root / "chain.csv"
    if not path.is_file() or path.is_symlink():
        return None
    rows = read_loose(path).to_dict("records")
    steps = [{k: str(r.get(k, "")) for k in ("step", "image", "caption", "prompt", "seed", "clip_to_original",
                                              "clip_to_previous")} for r in rows]
    steps = [s for s in steps if TOP_FILES.fullmatch(s["image"])]
    return {"steps": steps, "strip": (run.root / "chain_strip.png").is_file(),
            "drift": (run.root / "drift.png").is_file()}
