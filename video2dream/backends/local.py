"""The local backend: this process, its GPU (or CPU), models loaded once per stage through the
ModelCache, units run in batches of --batch-size (consecutive units that one model call can take)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..units import KINDS, Unit
from .base import Backend, Caption, Done, Painted, register

if TYPE_CHECKING:
    from ..settings import Settings
    from ..units import PaintParams


@register("local")
class LocalBackend(Backend):
    def __init__(self, models=None) -> None:
        from ..models.cache import ModelCache

        super().__init__(models or ModelCache())
        self._loaded: dict[str, Any] = {}
        # The units' input pictures by name (encoded bytes), when they came with the units (a Ray
        # actor on a node without the run folder): then root is never read.
        self._pictures: Mapping[str, bytes] | None = None

    def load(self, kind: str, settings: Settings) -> None:
        if kind == "morph":
            _check_morph(settings)
        if KINDS[kind].result == "Painted":  # in-betweens are painted by the same painter
            self._loaded[kind] = self.models.painter(settings)
        else:
            captioner = self.models.captioner(settings)
            interrogator = self.models.interrogator(settings) if settings.interrogate.mode != "caption" else None
            self._loaded["caption"] = (captioner, interrogator)

    def _get(self, kind: str, settings: Settings) -> Any:
        if kind not in self._loaded:
            self.load(kind, settings)
        return self._loaded[kind]

    def token_limits(self, units: list[Unit], settings: Settings) -> dict[str, tuple[str, str]]:
        painter = self._get("paint", settings)
        if painter.prompt_weighting:  # prompts are encoded whole, in chunks: nothing is cut
            return {}
        limits = {u.name: painter.token_limit(u.params["prompt"]) for u in units if u.kind == "paint"}
        return {n: cut for n, cut in limits.items() if cut[1]}

    def execute(self, root: Path, units: list[Unit], settings: Settings,
                wanted: Callable[[Unit], bool] | None = None, *,
                pictures: Mapping[str, bytes] | None = None) -> Iterator[list[Done]]:
        """pictures: each input (unit.inputs' names) as its file's bytes, read instead of root/name."""
        self._pictures = pictures
        pending = list(units)
        while pending:
            if wanted is not None:
                pending = [u for u in pending if wanted(u)]
                if not pending:
                    return
            batch = _batch(pending, settings)
            pending = pending[len(batch):]
            run = getattr(self, f"_{batch[0].kind}")  # one method per kind it runs: _paint, _morph, _caption
            yield list(zip(batch, run(root, batch, settings), strict=True))

    def _paint(self, root: Path, batch: list[Unit], settings: Settings) -> list[Painted]:
        painter = self._get("paint", settings)
        units = [u.typed() for u in batch]
        p = units[0]
        frames = self._open(root, [u.inputs[0] for u in batch]) if p.strength or p.controlnet else None
        options = {k: getattr(p, k) for k in ("control_scale", "refiner_switch") if getattr(p, k) is not None}
        self._set_style(painter, p)
        images = painter.paint([q.prompt for q in units], [q.negative_prompt for q in units],
                               [q.seed for q in units], p.width, p.height, p.steps,
                               p.guidance, strength=p.strength, init_images=frames if p.strength else None,
                               control_frames=frames if p.controlnet else None, **options)
        return [Painted(im, painter.sampler_name, painter.model_name) for im in images]

    def _morph(self, root: Path, batch: list[Unit], settings: Settings) -> list[Painted]:
        """In-betweens: each from its two keyframes' prompts, seeds (and frames, img2img) and its t."""
        from ..models.painter import Ends

        painter = self._get("morph", settings)
        units = [u.typed() for u in batch]
        p = units[0]
        self._set_style(painter, p)
        ends = []
        for side in (0, 1):
            params = [{"prompt": q.prompt, "negative_prompt": q.negative_prompt, "seed": q.seed} if side == 0
                      else q.b for q in units]
            init = self._open(root, [u.inputs[side] for u in batch]) if p.strength else None
            ends.append(Ends([q["prompt"] for q in params], [q["negative_prompt"] for q in params],
                             [q["seed"] for q in params], init))
        images = painter.paint_between(ends[0], ends[1], [q.t for q in units], p.width, p.height,
                                       p.steps, p.guidance, strength=p.strength)
        return [Painted(im, painter.sampler_name, painter.model_name) for im in images]

    def _caption(self, root: Path, batch: list[Unit], settings: Settings) -> list[Caption]:
        captioner, interrogator = self._get("caption", settings)
        p = batch[0].typed()
        images = self._open(root, [u.inputs[0] for u in batch])
        captions = captioner.caption(images, min_length=p.min_length, max_length=p.max_length,
                                     num_beams=p.num_beams, no_repeat_ngram_size=p.no_repeat_ngram_size)
        if p.mode == "caption" or interrogator is None:
            pairs = [(c, "") for c in captions]
        else:
            pairs = interrogator.interrogate(images, captions, p.mode)
        return [Caption(c, prompt, negative) for c, (prompt, negative) in zip(captions, pairs, strict=True)]

    def _open(self, root: Path, names: list[str]) -> list:
        import io

        from PIL import Image

        images = []
        for n in names:
            source = root / n if self._pictures is None else io.BytesIO(self._pictures[n])
            with Image.open(source) as im:
                images.append(im.convert("RGB"))
        return images

    def _set_style(self, painter: Any, p: PaintParams) -> None:
        """The batch's style image (--style-image; an absolute path, or its bytes given with the
        pictures on a cluster), or none."""
        image = self._open(Path("/"), [p.style_image])[0] if p.style_image else None
        painter.set_style(image, p.style_image_scale)


def _check_morph(settings: Settings) -> None:
    """The latent walk paints with the base model alone, from plain prompt embeddings: with a
    refiner, a ControlNet or weighted prompts its ends would not be the dreams."""
    from ..errors import UserError

    g = settings.generate
    on = [flag for flag, value in (("--refiner", g.refiner), ("--controlnet", g.controlnet),
                                   ("--prompt-weighting", g.prompt_weighting)) if value]
    if on:
        raise UserError(f"in-betweens walk SDXL's base alone, so they cannot start and end on dreams painted with "
                        f"{', '.join(on)}; paint the dreams without {'it' if len(on) == 1 else 'them'} (`none`), "
                        "or use --transition crossfade or flow")


def _batch(pending: list[Unit], settings: Settings) -> list[Unit]:
    """The next batch: up to --batch-size units from the front that share the parameters of one call."""
    first = pending[0]
    spec = KINDS[first.kind]
    shared = [first.params.get(k) for k in spec.shared]
    batch = []
    for u in pending[:spec.batch_size(settings)]:
        if u.kind != first.kind or [u.params.get(k) for k in spec.shared] != shared:
            break
        batch.append(u)
    return batch
