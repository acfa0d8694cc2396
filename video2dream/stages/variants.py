"""Variants: `generate --variants K` paints K candidates of each frame's dream (or of chosen frames,
`--rows 12,15-18`) into variants/000012_01.png ..., each with its seed in its A1111 text; `pick RUN
FRAME N` makes candidate N the frame's dream: its seed goes into the row's `seed` column of
prompts.csv and the picture moves into dreams/, where its key is then current (nothing repainted).

A candidate is the dream its frame would get with another seed (seeds.variant_seed): its key is the
one generate's plan gives with that seed pinned, so a candidate painted with other words or settings
is never picked as current."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..runfolder import RunFolder
from ..seeds import SEED_COLUMN, variant_seed
from ..settings import Settings
from ..units import Unit
from . import generate as gen
from .a1111 import a1111_text
from .engine import KEY_CHUNK, Engine, Stage, is_current

if TYPE_CHECKING:
    from ..backends import Backend, Painted
    from ..models.cache import ModelCache

MAX_VARIANTS = 99  # two digits in the candidates' names


@dataclass
class VariantsResult:
    painted: list[str] = field(default_factory=list)
    up_to_date: int = 0
    frames: int = 0


def variants_dir(run: RunFolder) -> Path:
    return run.root / "variants"


def variant_name(frame: str, k: int) -> str:
    return f"{Path(frame).stem}_{k:02d}.png"


def parse_rows(text: str | None, names: list[str]) -> list[str]:
    """`--rows 12,15-18`: the frames of those numbers, in frames.csv's order (all without --rows)."""
    if text is None:
        return list(names)
    by_number = {int(Path(n).stem): n for n in names}
    wanted: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*([0-9]{1,9})\s*(?:-\s*([0-9]{1,9})\s*)?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise UserError(f"--rows {text!r}: give frame numbers and ranges such as 12,15-18")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        # past the last frame: one is enough to say so (a single number past it too: `--rows 25` of 20 frames)
        wanted.update(range(low, min(high, max(max(by_number) + 1, low)) + 1))
    unknown = sorted(wanted - set(by_number))
    if unknown:
        raise UserError(f"--rows {text!r}: there is no frame {unknown[0]} (frames are numbered "
                        f"{min(by_number)} to {max(by_number)})")
    return [n for n in names if int(Path(n).stem) in wanted]


def plan_units(run: RunFolder, settings: Settings, count: int, rows: str | None = None, force: bool = False,
               backend: str | Backend | None = None) -> tuple[list[Unit], int]:
    """The paint units of the candidates that are not current (all with force), and how many there are."""
    if not 1 <= count <= MAX_VARIANTS:
        raise UserError(f"--variants {count}: give a number of candidates per frame from 1 to {MAX_VARIANTS}")
    jobs, size = gen.plan(run, settings, backend)
    chosen = set(parse_rows(rows, [j.name for j in jobs]))
    base = {j.name: j.seed for j in jobs if j.name in chosen}
    out, total = [], 0
    for k in range(1, count + 1):
        seeds = {n: variant_seed(s, k) for n, s in base.items()}
        for j in gen.plan(run, settings, backend, seeds=seeds)[0]:
            if j.name not in chosen:
                continue
            total += 1
            name = variant_name(j.name, k)
            if force or not is_current(variants_dir(run) / name, j.key):
                unit = gen.to_units(run, settings, [j], size, force=True)[0]
                out.append(Unit(name, "paint", unit.inputs, unit.params, unit.key))
    order = {n: i for i, n in enumerate(j.name for j in jobs)}
    out.sort(key=lambda u: (order[u.name.rsplit("_", 1)[0] + ".png"], u.name))  # a frame's candidates together
    return out, total


def generate_variants(run: RunFolder, settings: Settings, count: int, rows: str | None = None, force: bool = False,
                      on_ready: Callable[[], None] | None = None, models: ModelCache | None = None,
                      backend: str | Backend = "local") -> VariantsResult:
    """Paint the candidates that are not current, each committed as it is done. dreams/ is untouched."""
    engine = Engine(run, settings, backend, models)
    engine.check_here()  # a remote service's models need no device here
    todo, total = plan_units(run, settings, count, rows, force, backend)
    result = VariantsResult(up_to_date=total - len(todo), frames=total // count)
    result.painted = engine.run_units(STAGE, todo, on_ready)
    return result


def commit(run: RunFolder, unit: Unit, painted: Painted) -> str:
    """Write one candidate as generate writes a dream (colours matched with --color-coherence lab)."""
    from ..pngmeta import save_png

    image = painted.image
    if unit.params.get("color_coherence") == "lab":
        from ..color import match_lab

        image = match_lab(image, run.frames_dir / f"{unit.name.rsplit('_', 1)[0]}.png")
    save_png(image, variants_dir(run) / unit.name, a1111_text(unit.params, painted), {KEY_CHUNK: unit.key})
    return unit.name


STAGE = Stage("variants", "paint", "candidate", out_dir=lambda run: variants_dir(run), commit=commit)


# -- pick --------------------------------------------------------------------------------------


def frame_name(text: str, names: list[str]) -> str:
    """FRAME as a number (12) or a name (000012.png) -> the frame's name in frames.csv."""
    m = re.fullmatch(r"([0-9]{1,9})(\.png)?", text.strip())
    found = [n for n in names if m and int(Path(n).stem) == int(m.group(1))]
    if not found:
        raise UserError(f"there is no frame {text!r} (give its number, 12, or its name, 000012.png; frames are "
                        f"{names[0] if names else 'none'} to {names[-1] if names else 'none'})")
    return found[0]


SEED_FIELD = re.compile(r"(?:^|, )Seed: ([0-9]+)(?:,|$)")


def candidate_seed(path: Path) -> int | None:
    """The seed in a candidate's A1111 text (its last line holds the settings)."""
    from ..pngmeta import read_png_text

    try:
        last = read_png_text(path).get("parameters", "").rstrip("\n").rsplit("\n", 1)[-1]
    except Exception:  # damaged: no seed to read
        return None
    m = SEED_FIELD.search(last)
    return int(m.group(1)) if m else None


def pick(run: RunFolder, settings: Settings, frame: str, number: int) -> str:
    """Make candidate number (from 1) of frame its dream: the seed into prompts.csv's row, the picture
    into dreams/. Checked before anything is written: the candidate is whole and its key is the one
    the dream will need. The frame's name."""
    import pandas as pd

    from ..tables import read_csv, write_csv
    from .interrogate import FIX

    run.require()
    jobs, _ = gen.plan(run, settings)
    name = frame_name(frame, [j.name for j in jobs])
    path = variants_dir(run) / variant_name(name, number) if 1 <= number <= MAX_VARIANTS else None
    if path is None or not path.is_file():
        have = sorted(p.name for p in variants_dir(run).glob(f"{Path(name).stem}_*.png")) \
            if variants_dir(run).is_dir() else []
        raise UserError(f"{name} has no candidate {number} ({len(have)} in {variants_dir(run)}); paint them with "
                        f"`video2dream generate {run.root} --variants K --rows {int(Path(name).stem)}`")
    seed = candidate_seed(path)
    job = next(j for j in gen.plan(run, settings, seeds={name: seed})[0] if j.name == name) \
        if seed is not None else None
    if job is None or not is_current(path, job.key):
        raise UserError(f"{path.name} was painted with other words or settings than {name}'s now (or is damaged); "
                        f"paint the candidates again with `video2dream generate {run.root} --variants K "
                        f"--rows {int(Path(name).stem)}`")
    df = read_csv(run.prompts_csv, ["filename", "prompt"], FIX)
    if SEED_COLUMN not in df.columns:
        df[SEED_COLUMN] = ""
    df[SEED_COLUMN] = df[SEED_COLUMN].astype(str)
    df.loc[df["filename"] == name, SEED_COLUMN] = str(seed)
    run.dreams_dir.mkdir(parents=True, exist_ok=True)
    # the seed first: a kill before the move leaves a stale dream (painted again), never a wrong one
    write_csv(run.prompts_csv, pd.DataFrame(df))
    os.replace(path, run.dreams_dir / name)
    return name
