"""Keyframe times for extract: ticks every 1/fps seconds, the soundtrack's beats, the shots' cuts.

Beats come from librosa's beat tracker on the soundtrack (ffmpeg decodes it to mono PCM); cuts from
PySceneDetect's content detector on the picture. Both are optional (`pip install 'video2dream[music]'`),
imported only when asked for. A keyframe is a time of the source and what it is: a tick, a beat or
a cut (a cut starts a new shot). Every list starts at the first second extracted, so the picture of
the assembled video starts where the source's does, whatever the first beat's time.
"""

from __future__ import annotations

import bisect
import math
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import media
from .errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from .settings import ExtractSettings

TICK, BEAT, CUT = "tick", "beat", "cut"
KINDS = (TICK, BEAT, CUT)
AUDIO_RATE = 22050  # librosa's default rate: its beat tracker's defaults are tuned for it
MUSIC_EXTRA = "pip install 'video2dream[music]'"


@dataclass(frozen=True)
class Keyframe:
    time: float  # seconds of the source
    kind: str  # tick, beat or cut


def ticks(start: float, end: float, fps: float) -> list[float]:
    """start, start + 1/fps, ... before end; at least one."""
    count = max(1, math.ceil((end - start) * fps - 1e-9))
    return [start + k / fps for k in range(count)]


def keyframes(video: Path, probe: media.Probe, ex: ExtractSettings, start: float, end: float) -> list[Keyframe]:
    """The keyframes of [start, end) that the settings ask for, in time order."""
    # Two keyframes closer than a source frame would show the same picture: one of them is enough.
    near = 1.0 / probe.fps if probe.fps else 0.04
    if ex.at == "beats":
        found = beat_times(video, start, end)[:: ex.every]
        base = [Keyframe(start, BEAT if found and found[0] - start < near else TICK)]
        base += [Keyframe(t, BEAT) for t in found if t - start >= near]
    else:
        base = [Keyframe(t, TICK) for t in ticks(start, end, ex.fps)]
    if ex.scene_cuts:
        base = with_cuts(base, [t for t in cut_times(video, start, end) if t - start >= near], near)
    return base


def with_cuts(base: list[Keyframe], cuts: list[float], near: float) -> list[Keyframe]:
    """base with a keyframe at every cut; a base keyframe within `near` of a cut becomes that cut
    (the first one, at the start, is kept: the picture starts there)."""
    cuts = sorted(cuts)
    kept = [base[0]]
    for k in base[1:]:
        i = bisect.bisect_left(cuts, k.time)
        if all(abs(k.time - cuts[j]) >= near for j in (i - 1, i) if 0 <= j < len(cuts)):
            kept.append(k)
    return sorted(kept + [Keyframe(c, CUT) for c in cuts], key=lambda k: k.time)


# -- the soundtrack's beats ----------------------------------------------------------------------


def soundtrack(video: Path, start: float = 0.0, end: float | None = None, rate: int = AUDIO_RATE) -> np.ndarray:
    """The first audio stream of [start, end) (end None: to its end) as mono float32 samples at rate,
    through a pipe: nothing is written anywhere."""
    import numpy as np

    cmd = [media.ffmpeg_path(), "-hide_banner", "-nostdin", "-loglevel", "error"]
    if start > 0:
        cmd += ["-ss", f"{start!r}"]
    cmd += ["-i", media.arg(video), *(["-t", f"{end - start!r}"] if end is not None else []),
            "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"]
    with tempfile.TemporaryFile() as err:  # stderr to a file: a chatty ffmpeg never blocks
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err)
        if proc.returncode != 0:
            err.seek(0)
            lines = [ln for ln in err.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            raise UserError(f"ffmpeg could not decode the sound of {video}: {'; '.join(lines[-3:]) or 'no detail'}")
    return np.frombuffer(proc.stdout, np.float32)


def silent(samples: np.ndarray) -> bool:
    """No sample louder than -80 dBFS (a muted or empty soundtrack): nothing to hear a beat or onset in."""
    return float(abs(samples).max(initial=0.0)) < 1e-4


def import_librosa(needed_by: str) -> Any:
    """librosa, saying first that it is loading: its first import (numba compiling) can take a
    minute, which would otherwise pass in silence."""
    import importlib.util
    import sys

    if "librosa" not in sys.modules:
        if importlib.util.find_spec("librosa") is None:
            raise UserError(f"{needed_by} needs librosa: {MUSIC_EXTRA}")
        from .progress import say

        say("loading librosa for the soundtrack (the first time can take a minute)")
    import librosa

    return librosa


def beat_times(video: Path, start: float, end: float) -> list[float]:
    """Seconds of the source at which librosa's beat tracker hears a beat, in [start, end)."""
    import importlib.util

    if importlib.util.find_spec("librosa") is None:  # before decoding: the missing extra is the news
        raise UserError(f"--at beats needs librosa: {MUSIC_EXTRA}")
    samples = soundtrack(video, start, end)
    if samples.size < AUDIO_RATE // 2 or silent(samples):  # before librosa's slow import
        raise UserError(f"the soundtrack of {video} is silent between {start:g} and {end:g} s, so it has no "
                        "beats; use --at seconds")
    librosa = import_librosa("--at beats")
    _, frames = librosa.beat.beat_track(y=samples, sr=AUDIO_RATE, units="frames")
    times = snap(librosa.frames_to_time(frames, sr=AUDIO_RATE), samples)
    found = [start + t for t in times if start + t < end]
    if not found:
        raise UserError(f"librosa found no beat in the soundtrack of {video} between {start:g} and {end:g} s; "
                        "use --at seconds")
    return found


FINE_HOP = 64  # samples: 3 ms at 22050 Hz


def snap(beats: np.ndarray, samples: np.ndarray, reach: float = 0.05) -> list[float]:
    """Each beat moved to the sharpest rise of loudness within reach seconds. The tracker works
    on 23 ms frames and places beats a frame or so late; the attack itself is sharper than that.
    (Loudness in 3 ms steps with numpy: librosa's onset envelope at that hop costs seconds a minute.)"""
    import numpy as np

    n = len(samples) // FINE_HOP
    rms = np.sqrt((samples[: n * FINE_HOP].astype(np.float64).reshape(n, FINE_HOP) ** 2).mean(axis=1))
    rise = np.diff(rms, prepend=rms[:1])  # rise[k]: from step k - 1 to step k, which starts at k * hop
    w = max(1, round(reach * AUDIO_RATE / FINE_HOP))
    out = []
    for t in beats:
        c = round(float(t) * AUDIO_RATE / FINE_HOP)
        lo, hi = max(0, c - w), min(n, c + w + 1)
        k = lo + int(np.argmax(rise[lo:hi])) if hi > lo and rise[lo:hi].max() > 0 else c
        out.append(k * FINE_HOP / AUDIO_RATE)
    return sorted(set(out))


# -- the picture's cuts --------------------------------------------------------------------------


def cut_times(video: Path, start: float, end: float) -> list[float]:
    """Seconds of the source at which a new shot starts (its first frame's time), in (start, end)."""
    try:
        from scenedetect import ContentDetector, detect
    except ImportError:
        raise UserError(f"--scene-cuts needs PySceneDetect: {MUSIC_EXTRA}") from None
    try:
        scenes = detect(str(video), ContentDetector(), start_time=start or None, end_time=end)
    except Exception as e:  # noqa: BLE001 - OpenCV's reasons are many; one line says which
        raise UserError(f"PySceneDetect could not read {video} ({e.__class__.__name__}: {e}); "
                        "leave out --scene-cuts, or convert the video to mp4") from None
    starts = [_seconds(s[0]) for s in scenes[1:]]
    return [t for t in starts if start < t < end]


def _seconds(timecode: object) -> float:
    """A PySceneDetect FrameTimecode in seconds (0.7's property, 0.6's method)."""
    value = getattr(timecode, "seconds", None)
    return float(value if value is not None and not callable(value) else timecode.get_seconds())


# -- frames at any times -------------------------------------------------------------------------


def warp(times: list[float]) -> str:
    """An ffmpeg expression of T (seconds) that maps times[k] to k, piecewise linear and increasing
    (slope 1 before the first, steep after the last). After setpts with it, the fps filter at 1 fps
    gives for slot k the last frame at or before times[k]: the frame a player shows then. Written
    as a balanced tree of if()s, so each frame costs log2(len(times)) comparisons."""
    n = len(times)

    def piece(j: int) -> str:  # T in [times[j - 1], times[j]), with times[-1] = -inf, times[n] = +inf
        if j == 0:
            return f"(T-{times[0]!r})"
        if j == n:
            return f"({n - 1}+(T-{times[-1]!r})*1000)"
        return f"({j - 1}+(T-{times[j - 1]!r})/{times[j] - times[j - 1]!r})"

    def tree(lo: int, hi: int) -> str:  # pieces lo .. hi - 1
        if hi - lo == 1:
            return piece(lo)
        mid = (lo + hi) // 2
        return f"if(lt(T,{times[mid - 1]!r}),{tree(lo, mid)},{tree(mid, hi)})"

    if any(b <= a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError("keyframe times must increase")
    return tree(0, n + 1)
