"""What a chain shows (chain.csv, chain_strip.png, drift.png, chain.mp4) and the command's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..runfolder import RunFolder
from ..settings import Settings

if TYPE_CHECKING:
    from PIL import Image

    from .chain import ChainResult
    from .steps import Step

COLUMNS = ["step", "image", "caption", "prompt", "negative_prompt", "seed",
           "clip_to_original", "clip_to_previous", "caption_to_previous", "repeats_step"]
OUTPUTS = ("chain.csv", "chain_strip.png", "drift.png", "chain.mp4")


def thumbnails(images: list[Image.Image], height: int = 256) -> list[Image.Image]:
    out = []
    for im in images:
        small = im.copy()
        small.thumbnail((max(1, round(height * im.width / im.height)), height))
        out.append(small)
    return out


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _write_csv(path: Path, rows: list[Step]) -> None:
    import pandas as pd

    from ..tables import write_csv

    data = [{"step": r.step, "image": r.image, "caption": r.caption, "prompt": r.prompt,
             "negative_prompt": r.negative_prompt, "seed": "" if r.seed is None else r.seed,
             "clip_to_original": _fmt(r.clip_to_original), "clip_to_previous": _fmt(r.clip_to_previous),
             "caption_to_previous": _fmt(r.caption_to_previous),
             "repeats_step": "" if r.repeats_step is None else r.repeats_step} for r in rows]
    write_csv(path, pd.DataFrame(data, columns=COLUMNS))


def describe(settings: Settings) -> str:
    """Which models made it: printed on the strip and the plot (so tiny-preset output says so)."""
    i, g = settings.interrogate, settings.generate
    clip = f", CLIP {i.clip_model}" if i.mode != "caption" else ""
    tiny = " [tiny random test models: the pictures are noise]" if "tiny:" in i.caption_model + g.model else ""
    return f"BLIP {i.caption_model}{clip} (mode {i.mode}), SDXL {g.model} ({g.steps} steps){tiny}"


def _write_outputs(folder: RunFolder, rows: list[Step], images: list[Image.Image], settings: Settings,
                   name: str, fixed: tuple[int, int] | None) -> None:
    from ..stages.assemble import slideshow
    from ..strip import drift_plot, make_strip, save_strip

    root, t = folder.root, settings.telephone
    _write_csv(root / "chain.csv", rows)
    last = rows[-1].step
    labels = ["0 (input)"] + [f"step {r.step}" for r in rows[1:]]
    title = f"{name}: the telephone game, {last} step(s) - {describe(settings)}"
    save_strip(make_strip(images, [r.caption for r in rows], labels, title=title, tile_height=t.strip_height),
               root / "chain_strip.png")
    mark = (fixed[0], f"caption repeats step {fixed[1]}") if fixed else None
    drift_plot([r.step for r in rows],
               {"picture vs the original": [r.clip_to_original for r in rows],
                "picture vs the previous step": [r.clip_to_previous for r in rows],
                "caption vs the previous caption": [r.caption_to_previous for r in rows]},
               root / "drift.png", "step", f"{name}: how far the telephone chain drifts",
               f"{describe(settings)}; CLIP {settings.interrogate.clip_model}", mark)
    width, height = images[0].size
    slideshow([root / r.image for r in rows], t.hold, t.crossfade, width, height, root / "chain.mp4",
              settings, folder.state_dir / "chain.ffconcat")


@dataclass
class TelephoneResult:
    kind: str
    out: Path
    chains: list[ChainResult] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    rounds: int = 0
    rounds_painted: int = 0
    stopped_round: int | None = None
    grid: Path | None = None

    def summary(self) -> list[str]:
        lines = []
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s) that are not images "
                         f"({', '.join(p.name for p in self.skipped[:5])})")
        for c in self.chains:
            where = c.folder if self.kind == "image" else c.folder.name
            state = "up to date" if c.up_to_date else f"{c.painted} step(s) painted"
            line = f"telephone: {where}: {c.last} step(s), {state}"
            if c.fixed_point:
                k, j = c.fixed_point
                line += (f"; fixed point: step {k}'s caption repeats step {j}'s"
                         + (", so the chain stops there" if c.stopped else ""))
            lines.append(line)
            if c.truncated:
                lines.append(f"telephone: {c.truncated} prompt(s) were longer than the 77 tokens SDXL reads; "
                             "the rest was ignored")
        if self.kind == "folder":
            lines.append(f"telephone: {len(self.chains)} chain(s), index in {self.out / 'index_strip.png'}")
        if self.kind == "video":
            stop = (f"; every frame's caption repeated an earlier round's at round {self.stopped_round}, "
                    "so the game stops there" if self.stopped_round else "")
            lines.append(f"telephone: {self.rounds} round(s) over the clip ({self.rounds_painted} run now){stop}; "
                         f"side by side in {self.grid}; one round: video2dream assemble {self.out} --round K")
        return lines
