"""The telephone command: one image's chain, a chain per image of a folder, or a video's rounds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..runfolder import STATE, RunFolder
from ..settings import Settings
from .chain import run_chain
from .inputs import input_kind, list_images
from .outputs import TelephoneResult
from .video import play_video

if TYPE_CHECKING:
    from ..backends import Backend
    from ..models.cache import ModelCache


def telephone(source: str | Path, out: RunFolder, settings: Settings, force: bool = False,
              on_ready: Callable[[], None] | None = None, models: ModelCache | None = None,
              backend: str | Backend = "local") -> TelephoneResult:
    """Play the telephone game from an image, each image of a folder, or each frame of a video.
    `settings` are chain_settings(...) (interrogate.mode is the telephone's)."""
    from ..models.cache import ModelCache

    source = Path(source)
    kind = input_kind(source)
    models = models or ModelCache()
    if kind == "image":
        _check_not_run_folder(out)
        chain = run_chain(out, source, settings, models, force, on_ready, backend)
        return TelephoneResult("image", out.root, [chain])
    if kind == "folder":
        return _play_folder(source, out, settings, models, force, on_ready, backend)
    return play_video(source, out, settings, models, force, on_ready, backend)


def _check_not_run_folder(out: RunFolder) -> None:
    if out.frames_csv.is_file():
        raise UserError(f"{out.root} is the run folder of a video; give another -o folder for an image's chain")


def _play_folder(source: Path, out: RunFolder, settings: Settings, models: ModelCache, force: bool,
                 on_ready: Callable[[], None] | None, backend: str | Backend = "local") -> TelephoneResult:
    from ..strip import make_strip, save_strip, stack

    images, skipped = list_images(source)
    if not images:
        raise UserError(f"{source} holds no images Pillow can open; give a folder of PNG/JPEG/... files")
    _check_not_run_folder(out)
    result = TelephoneResult("folder", out.root, skipped=skipped)
    names: dict[str, Path] = {}
    for p in images:  # a.png and a.jpg both want the folder "a": the second gets "a.jpg"
        names[p.stem if p.stem not in names and p.stem != STATE else p.name] = p
    ready = on_ready
    for name, p in names.items():
        chain = run_chain(RunFolder(out.root / name), p, settings, models, force, ready, backend)
        ready = None  # settings are saved once, before the first chain writes
        result.chains.append(chain)
    strips = [make_strip(c.thumbs, c.captions, [str(k) for k in range(len(c.thumbs))], tile_height=128)
              for c in result.chains]
    titles = [f"{name}: {c.last} step(s)" + (f", fixed point at step {c.fixed_point[0]}" if c.fixed_point else "")
              for name, c in zip(names, result.chains, strict=True)]
    index = stack(strips, titles)
    index.info.pop("video2dream-captions", None)
    save_strip(index, out.root / "index_strip.png")
    return result
