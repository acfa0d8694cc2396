"""ffmpeg: finding it, probing inputs with it, and running it with its errors shown to the user."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

IMAGE_DEMUXERS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif"}


@functools.lru_cache(maxsize=1)
def ffmpeg_path() -> str:
    """The ffmpeg on PATH (or $VIDEO2DREAM_FFMPEG), else the binary imageio-ffmpeg ships."""
    explicit = os.environ.get("VIDEO2DREAM_FFMPEG")
    if explicit:
        return explicit
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UserError("ffmpeg not found: install it, or `pip install imageio-ffmpeg`") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def arg(path: str | os.PathLike[str]) -> str:
    """A path as ffmpeg must get it to open exactly that file: absolute, so that a name starting with
    '-' is never an option and one like 'file:x.mp4' or 'http:x' is never a protocol prefix."""
    return str(Path(path).absolute())


def image_pattern(folder: str | os.PathLike[str], pattern: str) -> str:
    """An image2 muxer output path: folder (absolute, its '%' escaped as '%%') / pattern ('%06d.png')."""
    return os.path.join(arg(folder).replace("%", "%%"), pattern)


def run_ffmpeg(
    args: Sequence[str],
    what: str,
    on_progress: Callable[[dict[str, str]], None] | None = None,
    loglevel: str = "error",
) -> list[str]:
    """Run ffmpeg; on failure raise a UserError with the last lines of its stderr. On success, the
    lines of its stderr: at loglevel error, what it could not read (a damaged input) though it went on.

    With on_progress, ffmpeg's `-progress` key=value blocks are passed to it as they come.
    """
    cmd = [ffmpeg_path(), "-hide_banner", "-nostdin", "-y", "-loglevel", loglevel]
    if on_progress:
        cmd += ["-nostats", "-progress", "pipe:1"]
    cmd += list(args)
    # stderr goes to a file so a chatty ffmpeg can never block on a full pipe.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if on_progress else subprocess.DEVNULL, stderr=err)
        try:
            if on_progress and proc.stdout is not None:
                block: dict[str, str] = {}
                for raw in proc.stdout:
                    key, _, value = raw.decode("utf-8", "replace").strip().partition("=")
                    block[key] = value
                    if key == "progress":
                        on_progress(block)
                        block = {}
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err.seek(0)
        lines = [ln for ln in err.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        if code != 0:
            detail = "; ".join(lines[-3:]) or _exit_reason(code)
            raise UserError(f"ffmpeg could not {what}: {detail}")
        return lines


def _exit_reason(code: int) -> str:
    """'exit code 1', or for a killed ffmpeg the signal, e.g. SIGXFSZ (File size limit exceeded)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            sig = signal.Signals(-code)
            return f"killed by {sig.name} ({signal.strsignal(sig) or 'a signal'})"
    return f"exit code {code}"


@dataclass
class Probe:
    path: str
    format: str
    duration: float
    start: float
    width: int
    height: int
    sar: float
    rotation: int
    fps: float | None
    video_codec: str
    has_audio: bool
    audio_codec: str | None
    size_bytes: int
    mtime_ns: int

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as shown: square pixels, rotation applied."""
        w, h = round(self.width * self.sar), self.height
        return (h, w) if self.rotation % 180 == 90 else (w, h)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_input_file(path: Path, kind: str = "video") -> None:
    if not path.exists():
        raise UserError(f"{kind} file not found: {path}; check the path")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a {kind} file")
    if not os.access(path, os.R_OK):
        raise UserError(f"cannot read {path}: permission denied")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes); give a {kind} file with content")


def _ffmpeg_info(path: Path) -> str:
    cmd = [ffmpeg_path(), "-hide_banner", "-nostdin", "-i", arg(path)]
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace").stderr


def _seconds(text: str) -> float:
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def probe(path: str | os.PathLike[str]) -> Probe:
    """What ffmpeg says about a video file (imageio-ffmpeg ships no ffprobe, so we read ffmpeg -i)."""
    path = Path(path)
    check_input_file(path)
    info = _ffmpeg_info(path)
    head = re.search(r"Input #0, ([^,]+)", info)
    if not head:
        reason = info.strip().splitlines()[-1] if info.strip() else "unknown error"
        raise UserError(f"{path} is not a video ffmpeg can read ({reason}); give an mp4, mkv, webm or mov file")
    fmt = head.group(1)
    audio = re.search(r"Stream #0:\d+[^:]*: Audio: (\w+)", info)
    # Cover art (an mp3's or m4a's attached picture) is a video stream of one still: not a video.
    videos = [m for m in re.finditer(r"Stream #0:\d+[^:]*: Video: (\w+).*?, (\d+)x(\d+)(?: \[SAR (\d+):(\d+))?(.*)",
                                     info) if "(attached pic)" not in m.group(6)]
    if not videos and audio:
        art = " with cover art" if "(attached pic)" in info else ""
        raise UserError(f"{path} has no video stream: it is an audio file{art}; give a video file "
                        "(a soundtrack goes to `assemble --audio` or `mux-audio`)")
    if not videos:
        raise UserError(f"{path} has no video stream; give a video file")
    video = videos[0]
    if fmt in IMAGE_DEMUXERS or video.group(1) in ("png", "mjpeg", "bmp", "webp", "tiff") and "Duration: N/A" in info:
        raise UserError(f"{path} is a still image, not a video; use `video2dream telephone` for images")
    codec, w, h = video.group(1), int(video.group(2)), int(video.group(3))
    sar = int(video.group(4)) / int(video.group(5)) if video.group(4) and int(video.group(5)) else 1.0
    if sar <= 0:
        sar = 1.0
    fps_match = re.search(r"([\d.]+) fps", video.group(6))
    duration_match = re.search(r"Duration: (\d+:\d+:[\d.]+)", info)
    start_match = re.search(r"Duration:.*?start: (-?[\d.]+)", info)
    rotation_match = re.search(r"rotation of (-?[\d.]+) degrees", info)
    duration = _seconds(duration_match.group(1)) if duration_match else 0.0
    if duration <= 0:
        raise UserError(f"{path} has no duration ffmpeg can read (truncated or still being written?)")
    stat = path.stat()
    return Probe(
        path=str(path.resolve()),
        format=fmt,
        duration=duration,
        start=float(start_match.group(1)) if start_match else 0.0,
        width=w,
        height=h,
        sar=sar,
        # ffmpeg reports counter-clockwise display rotation; only its multiple of 90 matters here.
        rotation=round(float(rotation_match.group(1))) % 360 if rotation_match else 0,
        fps=float(fps_match.group(1)) if fps_match else None,
        video_codec=codec,
        has_audio=audio is not None,
        audio_codec=audio.group(1) if audio else None,
        size_bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
    )


def read_through(path: str | os.PathLike[str]) -> tuple[float, list[str]]:
    """Read every packet of the picture stream without decoding it (about as fast as reading the
    file): where the stream ends (the last packet's time, seconds) and what ffmpeg could not read,
    e.g. a file cut short whose index promises more ('partial file')."""
    end = [0.0]

    def track(block: dict[str, str]) -> None:
        if block.get("out_time_us", "").lstrip("-").isdigit():
            end[0] = max(end[0], int(block["out_time_us"]) / 1e6)

    errors = run_ffmpeg(["-i", arg(path), "-map", "0:V:0", "-c", "copy", "-f", "null", "-"],
                        f"read {path}", on_progress=track)
    return end[0], errors


def decoded_times(path: str | os.PathLike[str]) -> list[float]:
    """The time of every picture ffmpeg decodes from path (a damaged stream loses some): one more
    decode, made only when the extraction met errors, to say which seconds they affect."""
    lines = run_ffmpeg(["-threads", "1", "-i", arg(path), "-map", "0:V:0", "-vf", "showinfo", "-f", "null", "-"],
                       f"decode {path}", loglevel="info")
    return sorted({float(m.group(1)) for ln in lines if (m := re.search(r"\bn:\s*\d+.*?pts_time:(-?[\d.]+)", ln))})


def has_audio(path: str | os.PathLike[str]) -> bool:
    """Whether a file (audio or video) has an audio stream ffmpeg can read."""
    path = Path(path)
    check_input_file(path, "audio")
    info = _ffmpeg_info(path)
    if not re.search(r"Input #0, ", info):
        raise UserError(f"{path} is not a media file ffmpeg can read; give an audio or video file")
    return re.search(r"Stream #0:\d+[^:]*: Audio: ", info) is not None


def fingerprint(path: str | os.PathLike[str]) -> str:
    """Identity of a file in keys: its size and a hash of its first and last MiB (the whole file when
    it is at most 1 MiB). Kept as it is so that existing keys hold; whether a source changed is told
    by content() over every byte."""
    import hashlib

    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    h.update(str(size).encode())
    return h.hexdigest()[:16]


def content(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A whole file's SHA-256, with the size and modification time it was read at: what a record
    keeps so that a later check reads the file again only when one of those has changed."""
    path = Path(path)
    st = path.stat()
    return {"sha256": _sha256(str(path.absolute()), st.st_size, st.st_mtime_ns),
            "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Read once per command for a given size and mtime (status and assemble ask more than once)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def source_changed(src: dict[str, Any], path: str | os.PathLike[str]) -> bool:
    """Whether the file at path differs from the source a record (extract's `source`) describes.
    A record with `content` is checked over every byte (read again only when the size or mtime
    differs from the recorded ones); an older record holds only the first-and-last-MiB fingerprint,
    which is all it can be checked against (extract and assemble then add `content`)."""
    recorded = src.get("content")
    if isinstance(recorded, dict) and recorded.get("sha256"):
        st = Path(path).stat()
        if (st.st_size, st.st_mtime_ns) == (recorded.get("size"), recorded.get("mtime_ns")):
            return False
        return st.st_size != recorded.get("size") or content(path)["sha256"] != recorded["sha256"]
    return bool(src.get("fingerprint")) and fingerprint(path) != src["fingerprint"]
