"""One image's chain: play, resume or extend it step by step, stop at a fixed point, write its outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import media
from ..errors import UserError
from ..runfolder import RunFolder
from ..settings import Settings
from .inputs import fit, load_image
from .keys import chain_key, chain_outputs_key, check_same_chain, clear_chain
from .outputs import OUTPUTS, _write_csv, _write_outputs, thumbnails
from .steps import Step, caption_unit, paint_unit, read_step, repeats, save_step, step_name

if TYPE_CHECKING:
    from PIL import Image

    from ..backends import Backend, Caption, Done, Painted
    from ..models.cache import ModelCache
    from ..stages.engine import Engine
    from ..units import Unit


@dataclass
class ChainResult:
    folder: Path
    last: int  # the chain's last step (as shown in chain.csv)
    painted: int  # steps painted by this command
    fixed_point: tuple[int, int] | None  # (step, the earlier step whose caption it repeats)
    stopped: bool  # ended early at the fixed point
    up_to_date: bool
    truncated: int = 0  # prompts longer than SDXL's 77 tokens
    thumbs: list[Image.Image] = field(default_factory=list, repr=False)  # each step, at most 256 px high
    captions: list[str] = field(default_factory=list, repr=False)


class Drift:
    """CLIP features of a chain's pictures and captions, and the figures made from them."""

    def __init__(self, clip) -> None:
        self.clip = clip
        self.images: list[Any] = []
        self.texts: list[Any] = []

    def add(self, images: list[Image.Image], captions: list[str]) -> None:
        for start in range(0, len(images), 16):
            self.images += list(self.clip.image_features(images[start:start + 16]).cpu())
            self.texts += list(self.clip.text_features(captions[start:start + 16]).cpu())

    def fill(self, rows: list[Step]) -> None:
        for k, row in enumerate(rows):
            row.clip_to_original = float(self.images[k] @ self.images[0])
            if k:
                row.clip_to_previous = float(self.images[k] @ self.images[k - 1])
                row.caption_to_previous = float(self.texts[k] @ self.texts[k - 1])


def run_chain(folder: RunFolder, source: Path, settings: Settings, models: ModelCache, force: bool = False,
              on_ready: Callable[[], None] | None = None, backend: str | Backend = "local") -> ChainResult:
    """Play (or resume, or extend) the chain of one image into folder; write its outputs. Each step
    is painted as a paint unit and captioned as a caption unit on backend, and committed like a dream."""
    from ..models.sizes import generation_size
    from ..stages.engine import Engine

    t, g = settings.telephone, settings.generate
    runner = Engine(folder, settings, backend, models)
    for kind in ("caption", "paint"):
        runner.check(kind)  # a setting the backend would drop: refused before the chain is touched
    original = load_image(source)
    size = (g.width, g.height) if g.width and g.height else generation_size(*original.size, g.pixels)
    key, parts = chain_key(settings, media.fingerprint(source), size)
    check_same_chain(folder, key, parts, force)
    rows, images = ([], []) if force else _finished_steps(folder, key)  # --force: cleared when opened
    fixed = next(((r.step, r.repeats_step) for r in rows if r.repeats_step is not None), None)
    target = min(t.steps, fixed[0]) if fixed and t.stop_at_fixed_point else t.steps

    outputs_key = chain_outputs_key(key, target, settings, source.name)
    done = folder.read_record("telephone-outputs") or {}
    if (len(rows) > target and rows[target].caption is not None and done.get("key") == outputs_key
            and all((folder.root / n).is_file() for n in OUTPUTS)):
        _open_chain(folder, source, key, parts, force, on_ready)
        return ChainResult(folder.root, target, 0, fixed if fixed and fixed[0] <= target else None,
                           bool(fixed and t.stop_at_fixed_point and fixed[0] <= target), True,
                           thumbs=thumbnails(images[:target + 1]), captions=[r.caption for r in rows[:target + 1]])

    # The models first: one that cannot load (offline, a bad name) fails before the folder is
    # written, so that the retry with other settings finds nothing to force past.
    to_paint = target > len(rows) - 1
    if to_paint or not rows or rows[-1].caption is None:
        runner.backend.load("caption", settings)
    drift = Drift(models.clip(settings))
    if to_paint:
        runner.backend.load("paint", settings)
    _open_chain(folder, source, key, parts, force, on_ready)
    if not rows:
        _first_step(folder, original, size, key, rows, images)
    pending = _settle(folder, runner, settings, key, rows, images) if rows[-1].caption is None else None
    if pending and rows[-1].repeats_step is not None and fixed is None:
        fixed = (rows[-1].step, rows[-1].repeats_step)
        target = min(t.steps, fixed[0]) if t.stop_at_fixed_point else target
    drift.add(images, [r.caption for r in rows])
    drift.fill(rows)
    _write_csv(folder.root / "chain.csv", rows[:target + 1])
    painted, truncated, fixed = _paint_steps(folder, source.name, settings, runner, drift, (key, size, target),
                                             rows, images, fixed, pending)
    return _finish(folder, source.name, settings, rows, images, fixed, target, outputs_key, painted, truncated)


def _open_chain(folder: RunFolder, source: Path, key: str, parts: dict[str, Any], force: bool,
                on_ready: Callable[[], None] | None) -> None:
    """Make the folder ready to write the chain (checked the same, or --force): settings saved,
    leftovers of a killed command gone, the chain's record written."""
    folder.check_links()  # an image's own folder in a folder's game is not locked on its own
    if on_ready:
        on_ready()
    folder.ensure()
    if force:
        clear_chain(folder)
    folder.remove_temporaries()
    folder.write_record("telephone", {"key": key, "parts": parts, "input": str(source.resolve())})


def _finished_steps(folder: RunFolder, key: str) -> tuple[list[Step], list[Image.Image]]:
    """The steps on disk, in order, as long as they carry this chain's key (the last one may still
    be uncaptioned); each captioned one marked with the earlier step its caption repeats."""
    rows: list[Step] = []
    images: list[Image.Image] = []
    while (not rows or rows[-1].caption is not None) and (
            row := read_step(folder.root / step_name(len(rows)), key, len(rows))) is not None:
        try:
            images.append(load_image(folder.root / row.image))
        except UserError:
            break
        rows.append(row)
    for k, row in enumerate(rows):
        if k and row.caption is not None:
            row.repeats_step = repeats([r.caption for r in rows[:k]], row.caption)
    return rows, images


def _first_step(folder: RunFolder, original: Image.Image, size: tuple[int, int], key: str,
                rows: list[Step], images: list[Image.Image]) -> None:
    """Step 0: the input fitted to the dream size (its caption unit comes next)."""
    first = fit(original, size)
    rows.append(Step(0, step_name(0), None))
    save_step(folder.root, first, rows[0], key, None)
    images.append(first)


def _settle(folder: RunFolder, engine: Engine, settings: Settings, key: str, rows: list[Step],
            images: list[Image.Image]) -> tuple[str, str]:
    """Caption the last step (a caption unit on its committed PNG) and commit it again with its
    caption; the next step's prompt and negative prompt."""
    from ..pngmeta import read_parameters
    from ..stages.engine import Stage

    row = rows[-1]
    made: list[Caption] = []

    def commit(run: RunFolder, unit: Unit, caption: Caption) -> str:
        made.append(caption)
        row.caption = caption.caption
        if row.step:
            row.repeats_step = repeats([r.caption for r in rows[:-1]], row.caption)
        save_step(run.root, images[-1], row, key, read_parameters(run.root / row.image) if row.step else None)
        return row.image

    engine.execute(Stage("telephone caption", "caption", "step", commit=commit),
                   [caption_unit(settings, row, key)], bar=False)
    return made[0].prompt, made[0].negative_prompt


def _next_prompt(engine: Engine, settings: Settings, key: str, row: Step) -> tuple[str, str]:
    """The prompt a step made in an earlier command leads to: its caption (caption mode), or what
    its caption unit makes of it again."""
    if settings.interrogate.mode == "caption":
        return row.caption or "", ""
    ((_, made),) = engine.results([caption_unit(settings, row, key)])
    return made.prompt, made.negative_prompt


def _paint_steps(folder: RunFolder, name: str, settings: Settings, engine: Engine, drift: Drift,
                 chain: tuple[str, tuple[int, int], int], rows: list[Step], images: list[Image.Image],
                 fixed: tuple[int, int] | None, pending: tuple[str, str] | None
                 ) -> tuple[int, int, tuple[int, int] | None]:
    """Paint, caption and commit steps up to the target (or the fixed point): (painted, truncated, fixed)."""
    from .. import report
    from ..stages.a1111 import a1111_text
    from ..stages.engine import Stage

    key, size, target = chain
    painted = truncated = 0
    todo = max(0, target - (len(rows) - 1))
    if todo:
        engine.backend.load("paint", settings)
    made: list[Done] = []

    def commit(run: RunFolder, unit: Unit, picture: Painted) -> str:
        row = Step(len(rows), step_name(len(rows)), None, unit.params["prompt"], unit.params["negative_prompt"],
                   unit.params["seed"])
        save_step(run.root, picture.image, row, key, a1111_text(unit.params, picture))
        made.append((row, picture))
        return row.image

    stage, reporter = f"telephone {name}", report.current()
    reporter.stage(stage, todo, "step")
    try:
        while len(rows) <= target:
            k = len(rows)
            prompt, negative = pending or _next_prompt(engine, settings, key, rows[-1])
            unit = paint_unit(settings, k, prompt, negative, size, key)
            truncated += bool(engine.backend.token_limits([unit], settings))
            engine.execute(Stage(stage, "paint", "step", commit=commit), [unit], bar=False)
            row, picture = made.pop()
            rows.append(row)
            images.append(picture.image)
            pending = _settle(folder, engine, settings, key, rows, images)
            drift.add([picture.image], [row.caption])
            drift.fill(rows)
            _write_csv(folder.root / "chain.csv", rows)
            painted += 1
            reporter.unit_done(stage, row.image)
            if row.repeats_step is not None and fixed is None:
                fixed = (k, row.repeats_step)
                if settings.telephone.stop_at_fixed_point:
                    break
    finally:
        reporter.finished(stage, painted)
    return painted, truncated, fixed


def _finish(folder: RunFolder, name: str, settings: Settings, rows: list[Step], images: list[Image.Image],
            fixed: tuple[int, int] | None, target: int, outputs_key: str, painted: int, truncated: int) -> ChainResult:
    """Write the chain's outputs up to its last step (the target, or the fixed point) and say what was done."""
    t = settings.telephone
    last = min(target, len(rows) - 1)
    if fixed and t.stop_at_fixed_point:
        last = min(last, fixed[0])
    rows, images = rows[:last + 1], images[:last + 1]
    _write_outputs(folder, rows, images, settings, name, fixed if fixed and fixed[0] <= last else None)
    folder.write_record("telephone-outputs", {"key": outputs_key, "last": last})
    shown_fixed = fixed if fixed and fixed[0] <= last else None
    return ChainResult(folder.root, last, painted, shown_fixed, bool(shown_fixed and t.stop_at_fixed_point),
                       False, truncated, thumbnails(images), [r.caption for r in rows])
