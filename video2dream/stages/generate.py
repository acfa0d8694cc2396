"""generate: prompts.csv (+ frames/ for img2img) -> dreams/NNNNNN.png with A1111 `parameters`.

plan_units (one paint unit per dream that is not current), a backend's execute, commit (one PNG).

A dream is current when its PNG carries a `video2dream` text chunk equal to the key of its prompt,
negative prompt, seed and generation settings: edit one row of prompts.csv and only that frame is
painted again. PNGs are encoded and written on a separate thread while the model paints the next batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..progress import say
from ..runfolder import RunFolder
from ..settings import GenerateSettings, Settings, inactive_tags, key_fields, stable_hash
from ..tables import moment_tolerance, parse_time, read_frames, same_moment
from ..units import Unit, merge_negative, needs_source, paint_params, painter_options, seed_for
from .a1111 import a1111_text
from .engine import KEY_CHUNK, Engine, Stage, is_current
from .interrogate import orphans_path, read_prompts

if TYPE_CHECKING:
    from ..backends import Backend, Painted
    from ..models.cache import ModelCache



@dataclass
class Job:
    name: str
    index: int
    prompt: str
    negative_prompt: str
    seed: int
    key: str


@dataclass
class GenerateResult:
    painted: list[str] = field(default_factory=list)
    up_to_date: int = 0
    width: int = 0
    height: int = 0
    truncated: list[str] = field(default_factory=list)


def dream_size(run: RunFolder, settings: Settings) -> tuple[int, int]:
    g = settings.generate
    if g.width and g.height:
        return g.width, g.height
    from ..models.sizes import generation_size

    done = run.read_record("extract") or {}
    if not done.get("width"):
        raise UserError(f"extract did not finish in {run.root}; run `video2dream extract` again")
    return generation_size(int(done["width"]), int(done["height"]), g.pixels)


def plan(run: RunFolder, settings: Settings, backend: str | Backend | None = None,
         seeds: dict[str, int] | None = None) -> tuple[list[Job], tuple[int, int]]:
    """One job per frame, with the key its dream must carry; strict checks of prompts.csv.
    backend: where the dreams are painted (default settings.backend): a remote one adds its part.
    seeds: frame name -> a seed to paint it with instead (a variant's; stages/variants.py)."""
    run.require()
    frames = read_frames(run.frames_csv)
    names = frames["filename"].tolist()
    if not run.prompts_csv.exists():
        raise UserError(f"{run.prompts_csv} is missing; run `video2dream interrogate {run.root}` first")
    df = read_prompts(run)
    rows = {r.filename: r for r in df.itertuples(index=False)}
    unknown = [n for n in rows if n not in set(names)]
    if unknown:
        raise UserError(f"prompts.csv has rows for frames that do not exist ({', '.join(unknown[:5])}); "
                        f"run `video2dream interrogate {run.root}`: it keeps hand-edited ones in "
                        f"{orphans_path(run).name}, or delete those rows")
    _check_moments(run, rows, dict(zip(names, frames["time"].tolist(), strict=True)))
    missing = [n for n in names if n not in rows]
    if missing:
        raise UserError(f"prompts.csv has no row for {len(missing)} frame(s) ({', '.join(missing[:5])}); "
                        f"run `video2dream interrogate {run.root}` to fill them in")
    empty = [n for n in names if not str(rows[n].prompt).strip()]
    if empty:
        raise UserError(f"prompts.csv has an empty prompt for {', '.join(empty[:5])}; write one, "
                        "or delete the row and run `video2dream interrogate` again")
    g = settings.generate
    width, height = dream_size(run, settings)
    extract_key = (run.read_record("extract") or {}).get("key")
    # per-unit settings (seed, negative prompt, size) are hashed per job below
    shared = key_fields(g, without=inactive_tags(g))
    from ..backends import key_part

    remote = key_part(backend or settings.backend, "paint", settings)  # empty for local: keys as before
    direct = directing(run, settings, frames, df, backend)
    jobs = []
    for n in names:
        index = int(Path(n).stem) if Path(n).stem.isdigit() else names.index(n) + 1
        seed = direct.seeds.get(n, seed_for(g, index))  # a row's pinned seed wins over the rule
        seed = (seeds or {}).get(n, seed)
        # the words as painted: the row's, then --style, then styles.csv's ranges at the frame's time
        own_negative = merge_negative(str(rows[n].negative_prompt), g)
        prompt, negative, applied = direct.styled(n, str(rows[n].prompt), own_negative)
        source = (extract_key, n) if needs_source(g) else None  # img2img and ControlNet also depend on the frame
        # parts added only when on: a dream made without them keeps its key
        extra = ([remote] if remote else []) + ([{"styles": applied}] if applied else []) + direct.image_part
        key = stable_hash(prompt, negative, seed, shared, width, height, source, settings.dtype, *extra)
        jobs.append(Job(n, index, prompt, negative, seed, key))
    return jobs, (width, height)


def directing(run: RunFolder, settings: Settings, frames: Any, df: Any, backend: str | Backend | None) -> Any:
    from ..directing import Directing

    return Directing.read(run, settings, frames, df, backend or settings.backend)


def _check_moments(run: RunFolder, rows: dict, times: dict[str, float]) -> None:
    """A row whose time is not its frame's was written for another moment (the frames were extracted
    again since): painting it onto this frame would put the words on the wrong picture. Refuse."""
    tol = moment_tolerance(sorted(times.values()))
    wrong = [n for n, row in rows.items() if not same_moment(row.time, times[n], tol)]
    if wrong:
        n = wrong[0]
        raise UserError(f"{run.prompts_csv.name}'s row for {n} is for the moment {parse_time(rows[n].time):.3f} s, "
                        f"but frames.csv has {n} at {times[n]:.3f} s ({len(wrong)} such row(s): the frames were "
                        f"extracted again); run `video2dream interrogate {run.root}`: it moves hand-edited rows "
                        "to the frame at their time and writes the others again")


def plan_units(run: RunFolder, settings: Settings, force: bool = False,
               backend: str | Backend | None = None) -> tuple[list[Unit], tuple[int, int]]:
    """The paint units of the dreams that are not current (all with force), and the dream size.
    Reads prompts.csv and the dreams' keys; loads no model."""
    jobs, size = plan(run, settings, backend)
    return to_units(run, settings, jobs, size, force), size


def to_units(run: RunFolder, settings: Settings, jobs: list[Job], size: tuple[int, int], force: bool) -> list[Unit]:
    g = settings.generate
    source = run.frames_dir.relative_to(run.root).as_posix()
    units = [Unit(j.name, "paint", (f"{source}/{j.name}",) if needs_source(g) else (),
                  _params(j, size, g), j.key)
             for j in jobs if force or not is_current(run.dreams_dir / j.name, j.key)]
    return units


def _params(j: Job, size: tuple[int, int], g: GenerateSettings) -> dict[str, Any]:
    params = paint_params(j.prompt, j.negative_prompt, j.seed, size, g.steps, g.guidance, g.strength, g.lora,
                          options=painter_options(g))
    if g.color_coherence != "none":  # applied by commit (on every backend's result), shown in the A1111 text
        params["color_coherence"] = g.color_coherence
    return params


def generate(run: RunFolder, settings: Settings, force: bool = False,
             on_ready: Callable[[], None] | None = None, models: ModelCache | None = None,
             backend: str | Backend = "local", only: list[str] | None = None) -> GenerateResult:
    """Paint the dreams that are not current. models: a cache to take the painter from (and leave
    it in); by default it loads here. backend: where the units run (a name, or a Backend). only:
    these frames alone (by name), the others left as they are."""
    jobs, (width, height) = plan(run, settings, backend)
    if only is not None:
        jobs = [j for j in jobs if j.name in set(only_frames(run, only, [j.name for j in jobs]))]
    engine = Engine(run, settings, backend, models)
    engine.check_here()  # even with nothing to paint: never save a bad --device
    todo = to_units(run, settings, jobs, (width, height), force)
    result = GenerateResult(up_to_date=len(jobs) - len(todo), width=width, height=height)
    if not todo:
        if on_ready:
            on_ready()
        return result

    def started(runner: Backend) -> None:
        result.truncated = _note_truncation(run, runner.token_limits(todo, settings), todo)

    result.painted = engine.run_units(STAGE, todo, on_ready, started)
    if settings.generate.prompt_weighting:  # every dream now reads its prompt whole: no list of cuts is true
        (run.root / "truncated.csv").unlink(missing_ok=True)
    return result


def only_frames(run: RunFolder, only: list[str], names: list[str]) -> list[str]:
    """The frames named in only, each one of names (frames.csv's); an unknown name is refused."""
    unknown = [n for n in only if n not in set(names)]
    if unknown:
        raise UserError(f"{unknown[0][:80]!r} is not a frame of {run.root} (frames are {names[0] if names else 'none'} "
                        f"to {names[-1] if names else 'none'})")
    return list(only)


def commit(run: RunFolder, unit: Unit, painted: Painted) -> str:
    """Write one dream: the picture (its colours matched to its frame's with --color-coherence lab),
    its A1111 text and its key (temp name, then rename). Matching here, where every backend's
    result is committed, makes a remote backend's dreams the same as a local one's."""
    from ..pngmeta import save_png

    image = painted.image
    if unit.params.get("color_coherence") == "lab":
        from ..color import match_lab

        image = match_lab(image, run.frames_dir / unit.name)
    save_png(image, run.dreams_dir / unit.name, a1111_text(unit.params, painted), {KEY_CHUNK: unit.key})
    return unit.name


STAGE = Stage("generate", "paint", "dream", out_dir=lambda run: run.dreams_dir, commit=commit)


def _note_truncation(run: RunFolder, limits: dict[str, tuple[str, str]], units: list[Unit]) -> list[str]:
    """SDXL's text encoders see 77 tokens: say so once, and record what was cut."""
    import pandas as pd

    from ..tables import write_csv

    cut = []
    for u in units:
        kept, lost = limits.get(u.name, (u.params["prompt"], ""))
        if lost:
            cut.append({"filename": u.name, "kept": kept, "cut": lost})
    if cut:
        say(f"{len(cut)} prompt(s) are longer than the 77 tokens SDXL reads; the rest is ignored "
            f"(what was cut is in {run.root / 'truncated.csv'}; --prompt-weighting a1111 reads them whole)")
        write_csv(run.root / "truncated.csv", pd.DataFrame(cut))  # text cells escaped for spreadsheets
    return [c["filename"] for c in cut]


def status_data(run: RunFolder, settings: Settings) -> dict[str, Any]:
    """Each dream against its key, as data (for `status` and `status --json`): a damaged dream is stale."""
    if not run.dreams_dir.is_dir():
        return {"state": "not run"}
    try:
        jobs, _ = plan(run, settings)
    except UserError as e:
        return {"state": "error", "error": f"cannot plan: {e}"}
    current = [j.name for j in jobs if is_current(run.dreams_dir / j.name, j.key)]
    done = set(current)
    stale = [j.name for j in jobs if j.name not in done and (run.dreams_dir / j.name).is_file()]
    missing = [j.name for j in jobs if j.name not in done and not (run.dreams_dir / j.name).is_file()]
    return {"state": "stale" if stale else "missing" if missing else "current",
            "total": len(jobs), "current": len(current), "stale": stale, "missing": missing}


def status(run: RunFolder, settings: Settings) -> str:
    return status_line(status_data(run, settings))


def status_line(d: dict[str, Any]) -> str:
    if d["state"] in ("not run", "error"):
        return d.get("error", d["state"])
    return f"{d['current']}/{d['total']} dreams current, {len(d['stale'])} stale, {len(d['missing'])} missing"
