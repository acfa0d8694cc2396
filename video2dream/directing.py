"""What the user directs beyond a row's words, read once per plan: the styles (--style, styles.csv),
the pinned seeds (prompts.csv's `seed` column) and the style image (--style-image). generate's plan
folds them into each dream's prompt, seed and key; morph and `run` plan through it, so their
in-betweens' ends are these dreams."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .seeds import SEED_COLUMN, pinned_seed
from .styles import StyleRange, read_styles, styled

if TYPE_CHECKING:
    from .backends import Backend
    from .runfolder import RunFolder
    from .settings import Settings


@dataclass
class Directing:
    style: str | None = None
    negative_style: str | None = None
    ranges: list[StyleRange] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)  # frame name -> its row's pinned seed
    image_part: list[dict[str, Any]] = field(default_factory=list)  # the style image's part of the keys

    @classmethod
    def read(cls, run: RunFolder, settings: Settings, frames: Any, df: Any, backend: str | Backend) -> Directing:
        g = settings.generate
        names = frames["filename"].tolist()
        times = [float(t) for t in frames["time"].tolist()]
        kinds = frames["kind"].tolist() if "kind" in frames.columns else ["tick"] * len(names)
        duration = ((run.read_record("source") or {}).get("probe") or {}).get("duration")
        ranges = read_styles(run.root, times, kinds, float(duration) if duration else None)
        seeds = {}
        if SEED_COLUMN in df.columns:
            for i, (name, cell) in enumerate(zip(df["filename"].tolist(), df[SEED_COLUMN].tolist(), strict=True)):
                seed = pinned_seed(cell, run.prompts_csv, i + 2)
                if seed is not None:
                    seeds[name] = seed
        image_part = []
        if g.style_image:
            _local_only(backend, settings)
            image_part = [{"style_image": image_hash(g.style_image), "scale": g.style_image_scale}]
        return cls(g.style, g.negative_style, ranges, dict(zip(names, times, strict=True)), seeds, image_part)

    def styled(self, name: str, prompt: str, negative: str) -> tuple[str, str, list[list[str]]]:
        return styled(prompt, negative, self.style, self.negative_style, self.ranges, self.times[name])


def image_hash(path: str) -> str:
    """The style image's content hash (a renamed copy is the same look; an edited one is not)."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"--style-image {path} cannot be read ({e.strerror or e}); "
                        "give an existing image file") from None
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"--style-image {path} is not a picture Pillow can read ({e}); give a PNG or JPEG") from None
    return hashlib.sha256(data).hexdigest()[:16]


def _local_only(backend: str | Backend, settings: Settings) -> None:
    """A remote service's painter takes no style image: refused before anything is paid."""
    from .backends import key_part

    name = backend if isinstance(backend, str) else backend.name
    if key_part(backend, "paint", settings):
        raise UserError(f"--backend {name} cannot paint with a style image (its model takes none); "
                        "paint with --backend local or ray, or leave out --style-image")
