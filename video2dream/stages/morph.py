"""morph: prompts.csv + frames.csv (+ the soundtrack) -> morphs/AAAAAA-BBBBBB_KK.png, the in-betweens.

Between two consecutive dreams (frames.csv's order; never across a row whose kind is `cut`: a hard
cut there), N pictures painted by SDXL from the spherical interpolation of the two keyframes'
starting noise and the linear interpolation of their prompt embeddings (the stable-diffusion-videos
walk; see Painter.paint_between). The K-th in-between of a gap is shown at the K/(N+1) point of the
gap's time; its t (how far it is from keyframe A to B) is K/(N+1) with --pacing linear, or where the
soundtrack's onset strength has reached that share of the gap's with --pacing audio, so that the
picture moves on the beat.

plan_units (one morph unit per in-between that is not current), a backend's execute, commit (one
PNG with A1111 `parameters` and its key). An in-between's key is its two dreams' keys and its t: edit
one row of prompts.csv and only the two gaps beside that frame are painted again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..progress import say
from ..runfolder import RunFolder
from ..settings import Settings, stable_hash
from ..tables import read_frames
from ..units import MorphParams, Unit, style_image_params
from . import generate as gen
from .a1111 import a1111_text
from .engine import KEY_CHUNK, Engine, Stage, is_current

if TYPE_CHECKING:
    from ..backends import Backend, Painted
    from ..models.cache import ModelCache

WALK = "slerp-noise/lerp-embeddings/v1"  # how an in-between is made: part of its key
T_DECIMALS = 4  # t values are rounded so that a key never depends on the last bits of a float


@dataclass
class Inbetween:
    name: str  # AAAAAA-BBBBBB_KK.png
    a: gen.Job  # the keyframe before
    b: gen.Job  # the keyframe after
    t: float  # 0 is a, 1 is b
    time: float  # source seconds at which it is shown
    key: str
    count: int = 0  # in-betweens in its gap (a frame interpolation model makes a gap's in one call)


@dataclass
class Gap:
    a: gen.Job
    b: gen.Job
    start: float  # source seconds of a
    end: float  # source seconds of b


@dataclass
class MorphResult:
    painted: list[str] = field(default_factory=list)
    up_to_date: int = 0
    gaps: int = 0
    cuts: int = 0
    pacing: str = "linear"  # as used: --pacing audio on a silent soundtrack is linear


def frame_kinds(run: RunFolder) -> tuple[list[str], list[float], list[str]]:
    """frames.csv's names, times and kinds (tick, beat, cut); a table without the column: all ticks."""
    df = read_frames(run.frames_csv)
    names, times = df["filename"].tolist(), [float(t) for t in df["time"].tolist()]
    kinds = [str(k).strip().lower() or "tick" for k in df["kind"].tolist()] if "kind" in df.columns \
        else ["tick"] * len(names)
    return names, times, kinds


def gaps(run: RunFolder, settings: Settings, backend: str | Backend | None = None) -> tuple[list[Gap], int]:
    """The gaps between consecutive keyframes that get in-betweens, and how many are hard cuts.
    backend: where the dreams and in-betweens are made (default settings.backend)."""
    jobs, _size = gen.plan(run, settings, backend)
    names, times, kinds = frame_kinds(run)
    by_name = {j.name: j for j in jobs}
    out, cuts = [], 0
    for i in range(len(names) - 1):
        if kinds[i + 1] == "cut":  # a new shot starts: never morph into it
            cuts += 1
            continue
        out.append(Gap(by_name[names[i]], by_name[names[i + 1]], times[i], times[i + 1]))
    return out, cuts


def gaps_to_fill(run: RunFolder, settings: Settings) -> int:
    """How many gaps get in-betweens, from frames.csv alone (before prompts.csv exists): what a
    backend that makes a gap's in-betweens in one call may create, at most."""
    _names, times, kinds = frame_kinds(run)
    return sum(kinds[i + 1] != "cut" and inbetween_count(Gap(None, None, times[i], times[i + 1]), settings) > 0
               for i in range(len(times) - 1))  # type: ignore[arg-type] # only the times are read


def inbetween_count(gap: Gap, settings: Settings) -> int:
    """--inbetweens, or as many as --out-fps shows in the gap's time (less the keyframe itself)."""
    n = settings.morph.inbetweens
    if n is not None:
        return n
    return max(0, round((gap.end - gap.start) * settings.assemble.out_fps) - 1)


def plan(run: RunFolder, settings: Settings, backend: str | Backend | None = None) -> list[Inbetween]:
    """Every in-between with its key, in the order they are shown; loads no model. A remote backend
    (a frame interpolation model on a service) adds its part and the gap's count to the keys: its
    in-between at t is the nearest of the gap's evenly spaced outputs, whose spacing the count sets."""
    from ..backends import key_part

    remote = key_part(backend or settings.backend, "morph", settings)  # empty for local: keys as before
    found, _cuts = gaps(run, settings, backend)
    counts = [inbetween_count(g, settings) for g in found]
    if settings.morph.pacing == "audio" and any(counts):
        ts = audio_paced(run, settings, found, counts)
    else:
        ts = [linear(n) for n in counts]
    out = []
    for g, n, gap_ts in zip(found, counts, ts, strict=True):
        width = max(2, len(str(n)))
        for k, t in enumerate(gap_ts, start=1):
            name = f"{Path(g.a.name).stem}-{Path(g.b.name).stem}_{k:0{width}d}.png"
            time = g.start + (g.end - g.start) * k / (n + 1)
            key = stable_hash(WALK, g.a.key, g.b.key, t, *([remote, n] if remote else []))
            out.append(Inbetween(name, g.a, g.b, t, time, key, n))
    return out


def linear(n: int) -> list[float]:
    return [round(k / (n + 1), T_DECIMALS) for k in range(1, n + 1)]


# -- pacing by the soundtrack ------------------------------------------------------------------


def audio_paced(run: RunFolder, settings: Settings, found: list[Gap], counts: list[int]) -> list[list[float]]:
    """Each gap's t values spaced by the soundtrack's onset strength: the K-th in-between (shown at
    the K/(N+1) point of the gap) has t = the share of the gap's onset strength heard by then."""
    import numpy as np

    envelope, rate = onset_envelope(run, settings)
    out = []
    for g, n in zip(found, counts, strict=True):
        if n == 0:
            out.append([])
            continue
        lo, hi = int(np.floor(g.start * rate)), int(np.ceil(g.end * rate))
        out.append(paced(envelope[lo:hi + 1], n))
    return out


def paced(strength: Any, n: int) -> list[float]:
    """t values for n in-betweens from the onset strength over a gap (evenly spaced samples): the
    cumulative share of strength at the n evenly spaced points. A floor of 5% of the mean keeps the
    picture moving through quiet parts; silence gives linear pacing."""
    import numpy as np

    s = np.clip(np.asarray(strength, dtype=np.float64), 0, None)
    if s.size < 2 or not np.isfinite(s).all() or s.sum() <= 0:
        return linear(n)
    s = s + 0.05 * s.mean()
    steps = (s[:-1] + s[1:]) / 2  # trapezoids between samples
    cumulative = np.concatenate([[0.0], np.cumsum(steps)]) / steps.sum()
    where = np.linspace(0, 1, s.size)
    ts = np.interp([k / (n + 1) for k in range(1, n + 1)], where, cumulative)
    return [round(float(t), T_DECIMALS) for t in ts]


SAMPLE_RATE = 22050
HOP = 256  # ~11.6 ms per onset-strength sample


def onset_envelope(run: RunFolder, settings: Settings) -> tuple[Any, float]:
    """librosa's onset strength of the soundtrack assemble would use (source seconds), and its
    samples per second."""
    import numpy as np

    from ..timing import import_librosa, silent

    pcm = _soundtrack(run, settings)
    if silent(pcm):  # no onsets to follow (paced() makes it linear): librosa's slow import spared
        return np.zeros(max(1, pcm.size // HOP + 1)), SAMPLE_RATE / HOP
    librosa = import_librosa("--pacing audio")
    env = librosa.onset.onset_strength(y=pcm, sr=SAMPLE_RATE, hop_length=HOP)
    return np.asarray(env, dtype=np.float64), SAMPLE_RATE / HOP


def _soundtrack(run: RunFolder, settings: Settings) -> Any:
    """The soundtrack assemble would use, as mono PCM at SAMPLE_RATE."""
    import importlib.util

    from ..timing import MUSIC_EXTRA, soundtrack
    from .assemble import audio_source

    if importlib.util.find_spec("librosa") is None:
        raise UserError(f"{{morph.pacing}} audio needs librosa: {MUSIC_EXTRA}", paths=("morph.pacing",))
    sound = audio_source(run, settings.assemble.audio)
    if sound.path is None:
        raise UserError(f"{{morph.pacing}} audio follows the soundtrack, and there is none ({sound.says}); "
                        "use {morph.pacing} linear, or give one with {assemble.audio} FILE",
                        paths=("morph.pacing", "assemble.audio"))
    return soundtrack(sound.path, rate=SAMPLE_RATE)


def pacing_used(run: RunFolder, settings: Settings) -> str:
    """The pacing the in-betweens get: --pacing audio on a silent soundtrack falls back to linear."""
    from ..timing import silent

    if settings.morph.pacing != "audio" or not silent(_soundtrack(run, settings)):
        return settings.morph.pacing
    return "linear"


# -- units, execute, commit --------------------------------------------------------------------


def to_units(run: RunFolder, settings: Settings, todo: list[Inbetween], size: tuple[int, int]) -> list[Unit]:
    g = settings.generate
    frames = run.frames_dir.relative_to(run.root).as_posix()
    dreams = run.dreams_dir.relative_to(run.root).as_posix()
    units = []
    for m in todo:
        # A1111's own names where they mean the same: its variation seed is a slerp of two noises.
        trailing = {"Variation seed": m.b.seed, "Variation seed strength": m.t, "Morph": f"{m.a.name} to {m.b.name}",
                    "Morph prompt B": m.b.prompt, "Morph negative prompt B": m.b.negative_prompt or None}
        # gap: what a frame interpolation model needs (it makes the gap's in-betweens from the two
        # dreams in one call, which must be the ones these keys name); not in the key, not in the text
        params = MorphParams(m.a.prompt, m.a.negative_prompt, int(m.a.seed), size[0], size[1], g.steps, g.guidance,
                             g.strength, g.lora, t=m.t,
                             b={"prompt": m.b.prompt, "negative_prompt": m.b.negative_prompt, "seed": m.b.seed},
                             trailing=trailing, gap={"count": m.count, "keys": [m.a.key, m.b.key]},
                             **style_image_params(g)).to_dict()
        # The frames (img2img: the local walk's init latents) first, then the two dreams (a frame
        # interpolation model's input): the local backend reads inputs[0] and [1] only with strength.
        inputs = (f"{frames}/{m.a.name}", f"{frames}/{m.b.name}") if g.strength else ()
        inputs += (f"{dreams}/{m.a.name}", f"{dreams}/{m.b.name}")
        units.append(Unit(m.name, "morph", inputs, params, m.key))
    return units


def plan_units(run: RunFolder, settings: Settings, force: bool = False,
               backend: str | Backend | None = None) -> tuple[list[Unit], int]:
    """The morph units of the in-betweens that are not current (all with force), and how many there are."""
    planned = plan(run, settings, backend)
    size = gen.dream_size(run, settings)
    todo = [m for m in planned if force or not is_current(run.morphs_dir / m.name, m.key)]
    return to_units(run, settings, todo, size), len(planned)


def morph(run: RunFolder, settings: Settings, force: bool = False, on_ready: Callable[[], None] | None = None,
          models: ModelCache | None = None, backend: str | Backend = "local") -> MorphResult:
    """Paint the in-betweens that are not current, batch by batch, each committed as it is done."""
    found, cuts = gaps(run, settings, backend)
    engine = Engine(run, settings, backend, models)
    engine.check_here()  # a remote service's models need no device here
    todo, total = plan_units(run, settings, force, backend)
    result = MorphResult(up_to_date=total - len(todo), gaps=len(found), cuts=cuts,
                         pacing=pacing_used(run, settings) if total else settings.morph.pacing)
    if result.pacing != settings.morph.pacing:
        say("warning: the soundtrack is silent, so --pacing audio has no onsets to follow: "
            "the in-betweens are evenly spaced (linear pacing)")
    result.painted = engine.run_units(STAGE, todo, on_ready)
    return result


def commit(run: RunFolder, unit: Unit, painted: Painted) -> str:
    """Write one in-between: the picture, its A1111 text and its key (temp name, then rename)."""
    from ..pngmeta import save_png

    save_png(painted.image, run.morphs_dir / unit.name, a1111_text(unit.params, painted), {KEY_CHUNK: unit.key})
    return unit.name


STAGE = Stage("morph", "morph", "in-between", out_dir=lambda run: run.morphs_dir, commit=commit)


# -- assemble and status -----------------------------------------------------------------------


def interleave(run: RunFolder, settings: Settings, names: list[str], times: list[float]) -> list[tuple[str, float]]:
    """The pictures of `assemble --transition morph` in order: each dream at its time, then its gap's
    in-betweens at theirs (paths relative to the run folder, source seconds)."""
    by_gap: dict[str, list[Inbetween]] = {}
    for m in plan(run, settings):
        by_gap.setdefault(m.a.name, []).append(m)
    dreams = run.dreams_dir.relative_to(run.root).as_posix()
    morphs = run.morphs_dir.relative_to(run.root).as_posix()
    shown = []
    for name, t in zip(names, times, strict=True):
        shown.append((f"{dreams}/{name}", t))
        shown += [(f"{morphs}/{m.name}", m.time) for m in by_gap.get(name, [])]
    return shown


def status_data(run: RunFolder, settings: Settings) -> dict[str, Any]:
    """Each in-between against its key, as data (for `status` and `status --json`)."""
    if not run.morphs_dir.is_dir() and settings.assemble.transition != "morph":
        return {"state": "not run"}
    try:
        planned = plan(run, settings)
        found, cuts = gaps(run, settings)
    except UserError as e:
        return {"state": "error", "error": f"cannot plan: {e}"}
    current = [m.name for m in planned if is_current(run.morphs_dir / m.name, m.key)]
    done = set(current)
    stale = [m.name for m in planned if m.name not in done and (run.morphs_dir / m.name).is_file()]
    missing = [m.name for m in planned if m.name not in done and not (run.morphs_dir / m.name).is_file()]
    return {"state": "stale" if stale else "missing" if missing else "current", "total": len(planned),
            "current": len(current), "stale": stale, "missing": missing, "gaps": len(found), "cuts": cuts,
            "pacing": settings.morph.pacing}


def status_line(d: dict[str, Any]) -> str:
    if d["state"] in ("not run", "error"):
        return d.get("error", d["state"])
    cuts = f", {d['cuts']} hard cut(s)" if d["cuts"] else ""
    return (f"{d['current']}/{d['total']} in-betweens current ({d['gaps']} gaps{cuts}, {d['pacing']} pacing), "
            f"{len(d['stale'])} stale, {len(d['missing'])} missing")
