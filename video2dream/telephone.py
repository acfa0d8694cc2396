"""The telephone game: caption a picture, paint the caption, caption the painting, ... N times.

One image:   OUT/step_000.png (the input as the chain saw it: flattened onto white, RGB, fitted to
             the dream size), step_001.png ... step_NNN.png, chain.csv, chain_strip.png, drift.png,
             chain.mp4.
A folder:    one such chain per image in OUT/<image name>/, plus OUT/index_strip.png.
A video:     OUT is a run folder: frames/ (extract), then round r reads round r-1's pictures (round 1
             reads frames/) and writes prompts (prompts.csv, prompts_r02.csv, ...) and dreams
             (dreams/, dreams_r02/, ...). Round 1 is exactly what `interrogate` + `generate` make, so
             `assemble` works on it as usual; `assemble --round K` makes one round's video and
             `assemble --grid` all of them side by side. drift.csv / drift.png: per round.

Step k of a chain (k >= 1): the prompt is made from step k-1's caption (the caption itself in
caption mode, else CLIP Interrogator's prompt built on it), SDXL paints it with seed
`--seed + k` (`--seed` in fixed seed mode), and BLIP captions the new picture. Each step's PNG
carries its row (caption, prompt, seed) and the chain's settings key in a text chunk, so a killed
chain resumes from its last finished step and a larger --steps extends it. Other settings (another
input, model, size, caption length, seed, ...) make the command refuse, naming what changed;
--force starts the chain over.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import media
from .errors import UserError
from .progress import progress_bar
from .runfolder import STATE, RunFolder
from .settings import KEY, PER_UNIT, Settings, key_fields, replace_section, stable_hash
from .units import Unit

if TYPE_CHECKING:
    from PIL import Image

    from .backends import Backend, Painted
    from .models.cache import ModelCache

CHUNK = "video2dream-telephone"  # a step PNG's row and the chain key, as JSON
BACKGROUND = (255, 255, 255)  # transparent pixels are flattened onto white
SEED_STRIDE = 100_000  # a video's round r paints with --seed + (r - 1) * SEED_STRIDE as its base seed
CHAIN_VERSION = 1  # bump when the way a chain is made changes, so old steps are not reused
COLUMNS = ["step", "image", "caption", "prompt", "negative_prompt", "seed",
           "clip_to_original", "clip_to_previous", "caption_to_previous", "repeats_step"]
OUTPUTS = ("chain.csv", "chain_strip.png", "drift.png", "chain.mp4")
ROUND_COLUMNS = ["round", "folder", "clip_to_frames", "clip_to_previous", "caption_to_previous",
                 "captions_repeated"]


def chain_settings(settings: Settings) -> Settings:
    """The settings a chain runs with: interrogate's mode is telephone's (default caption)."""
    return replace_section(settings, "interrogate", mode=settings.telephone.mode)


# -- input ----------------------------------------------------------------------------------------


def input_kind(path: Path) -> str:
    """'image', 'folder' or 'video'; a clear error for anything else."""
    if not path.exists():
        raise UserError(f"input not found: {path}; check the path")
    if path.is_dir():
        return "folder"
    media.check_input_file(path, "input")
    if is_image(path):
        return "image"
    from PIL import Image

    if path.suffix.lower() in Image.registered_extensions():
        raise UserError(f"{path} is not an image Pillow can open (corrupt, cut short, or not really a "
                        f"{path.suffix} file?); give an image, a folder of images, or a video")
    try:
        media.probe(path)
    except UserError as e:
        if "no video stream" in str(e):
            raise
        raise UserError(f"{path} is neither an image Pillow can open nor a video ffmpeg can read; give an "
                        "image (PNG, JPEG, WebP, ...), a folder of images, or a video") from None
    return "video"


def is_image(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


def load_image(path: Path) -> Image.Image:
    """Any picture Pillow opens, as 8-bit RGB: EXIF rotation applied, the first frame of an animation,
    16-bit and float greyscale scaled to 8 bits, transparency flattened onto white."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return to_rgb(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path}: Pillow cannot decode this image (corrupt or cut short?): {e}") from None


def to_rgb(im: Image.Image) -> Image.Image:
    import numpy as np
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = a.max() if a.size else 0.0
        if im.mode == "F" and top <= 1.0:
            a = a * 255.0
        elif top > 255:
            a = a / 257.0 if top <= 65535 else a * (255.0 / top)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def fit(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scaled to cover size and centre-cropped: the aspect ratio is kept, never stretched."""
    from PIL import Image, ImageOps

    if im.size == size:
        return im
    return ImageOps.fit(im, size, Image.Resampling.LANCZOS)


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(images, skipped files) in a folder, sorted by name; hidden files are ignored."""
    images, skipped = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (images if is_image(p) else skipped).append(p)
    return images, skipped


# -- one chain ------------------------------------------------------------------------------------


@dataclass
class Step:
    step: int
    image: str
    caption: str
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    clip_to_original: float | None = None
    clip_to_previous: float | None = None
    caption_to_previous: float | None = None
    repeats_step: int | None = None

    def chunk(self, key: str) -> str:
        data = {"key": key, "step": self.step, "caption": self.caption, "prompt": self.prompt,
                "negative_prompt": self.negative_prompt, "seed": self.seed}
        return json.dumps(data, ensure_ascii=False)


def step_name(k: int) -> str:
    return f"step_{k:03d}.png"


def seed_for(settings: Settings, k: int) -> int:
    from .units import seed_for

    return seed_for(settings.generate, k)  # the generate stage's rule, with the step for the frame


def normalised(caption: str) -> str:
    return " ".join(caption.lower().split())


def repeats(captions: Sequence[str], caption: str) -> int | None:
    """The first earlier step whose caption is this one (case and spacing aside)."""
    want = normalised(caption)
    return next((j for j, c in enumerate(captions) if normalised(c) == want), None)


def chain_key(settings: Settings, fingerprint: str, size: tuple[int, int]) -> tuple[str, dict[str, Any]]:
    """The key every step PNG carries: what decides the pictures and captions, nothing else
    (not --steps, --stop-at-fixed-point, the video's --hold, batch sizes or the device)."""
    # In caption mode CLIP is only used for the drift figures, made fresh each time.
    i = key_fields(settings.interrogate, without=("clip",) if settings.interrogate.mode == "caption" else ())
    # The chain is one unit: its seed rule and negative prompt as they are; the size is given as such.
    g = key_fields(settings.generate, roles=(KEY, PER_UNIT), without=("size",))
    parts = {"input": fingerprint, "size": list(size), "interrogate": i, "generate": g,
             "dtype": settings.dtype, "background": list(BACKGROUND), "version": CHAIN_VERSION}
    return stable_hash(parts), parts


def chain_outputs_key(key: str, target: int, settings: Settings, source_name: str) -> str:
    """The key of chain.csv, the strip, the drift figure and chain.mp4: the chain's, how many steps
    they show, telephone's KEY settings, and what they use of CLIP and of the video encoder."""
    a = settings.assemble
    return stable_hash(key, target, *key_fields(settings.telephone).values(), settings.interrogate.clip_model,
                       a.out_fps, a.crf, str(source_name))


def _changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}" if k != "input" else "the input image")
    return out


def read_step(path: Path, key: str, k: int) -> Step | None:
    """The row a step PNG carries, if it belongs to this chain (key) at this place (k)."""
    from .pngmeta import read_png_text

    try:
        data = json.loads(read_png_text(path)[CHUNK])
    except (OSError, ValueError, KeyError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("step") != k:
        return None
    return Step(k, path.name, str(data.get("caption", "")), str(data.get("prompt", "")),
                str(data.get("negative_prompt", "")), data.get("seed"))


def _check_same_chain(run: RunFolder, key: str, parts: dict[str, Any], force: bool) -> None:
    """Refuse to touch a chain made with other settings (or from another input) unless --force."""
    if force:
        return
    record = run.read_record("telephone")
    if record and record.get("key") != key:
        changed = _changes(record.get("parts") or {}, parts)
        what = "; ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise UserError(f"{run.root} holds a telephone chain made from another input or with other settings "
                        f"(changed: {what or 'unknown'}); give another -o folder, or add --force to start "
                        "this chain over")
    first = run.root / step_name(0)
    if not record and first.is_file() and read_step(first, key, 0) is None:
        raise UserError(f"{run.root} holds a step_000.png of another chain (or not of a chain); "
                        "give another -o folder, or add --force to start over")


def _clear(run: RunFolder) -> None:
    for p in run.root.glob("step_*.png"):
        if re.fullmatch(r"step_\d{3,}\.png", p.name):
            p.unlink()
    for name in OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            (run.root / name).unlink()
    run.clear_record("telephone")
    run.clear_record("telephone-outputs")


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
    is painted as a paint unit on backend and committed like a dream."""
    from .models.sizes import generation_size

    t, g, i = settings.telephone, settings.generate, settings.interrogate
    original = load_image(source)
    size = (g.width, g.height) if g.width and g.height else generation_size(*original.size, g.pixels)
    key, parts = chain_key(settings, media.fingerprint(source), size)
    _check_same_chain(folder, key, parts, force)
    folder.check_links()  # an image's own folder in a folder's game is not locked on its own
    if on_ready:
        on_ready()
    folder.ensure()
    if force:
        _clear(folder)
    folder.remove_temporaries()
    folder.write_record("telephone", {"key": key, "parts": parts, "input": str(source.resolve())})

    # The finished steps on disk, in order, as long as they carry this chain's key.
    rows: list[Step] = []
    images: list[Image.Image] = []
    while (row := read_step(folder.root / step_name(len(rows)), key, len(rows))) is not None:
        try:
            images.append(load_image(folder.root / row.image))
        except UserError:
            break
        rows.append(row)
    for k, row in enumerate(rows):
        row.repeats_step = repeats([r.caption for r in rows[:k]], row.caption) if k else None
    fixed = next(((r.step, r.repeats_step) for r in rows if r.repeats_step is not None), None)
    target = min(t.steps, fixed[0]) if fixed and t.stop_at_fixed_point else t.steps

    outputs_key = chain_outputs_key(key, target, settings, source.name)
    done = folder.read_record("telephone-outputs") or {}
    if (len(rows) > target and done.get("key") == outputs_key
            and all((folder.root / n).is_file() for n in OUTPUTS)):
        return ChainResult(folder.root, target, 0, fixed if fixed and fixed[0] <= target else None,
                           bool(fixed and t.stop_at_fixed_point and fixed[0] <= target), True,
                           thumbs=thumbnails(images[:target + 1]), captions=[r.caption for r in rows[:target + 1]])

    def caption(im: Image.Image) -> str:
        return models.captioner(settings).caption(
            [im], min_length=i.min_length, max_length=i.max_length, num_beams=i.num_beams,
            no_repeat_ngram_size=i.no_repeat_ngram_size)[0]

    if not rows:
        first = fit(original, size)
        rows.append(Step(0, step_name(0), caption(first)))
        _save_input(folder.root, first, rows[0], key)
        images.append(first)
    interrogator = models.interrogator(settings) if i.mode != "caption" and len(rows) <= target else None
    drift = Drift(models.clip(settings))
    drift.add(images, [r.caption for r in rows])
    drift.fill(rows)
    _write_csv(folder.root / "chain.csv", rows[:target + 1])

    painted = truncated = 0
    todo = max(0, target - (len(rows) - 1))
    from .backends import backend_for

    runner = backend_for(backend, models)
    if todo:
        runner.load("paint", settings)
    with progress_bar(total=todo, desc=f"telephone {source.name}", unit="step") as bar:
        while len(rows) <= target:
            k = len(rows)
            prev, prev_caption = images[-1], rows[-1].caption  # img2img reads prev from its step PNG
            if interrogator is None:
                prompt, negative = prev_caption, ""
            else:
                prompt, negative = interrogator.interrogate([prev], [prev_caption], i.mode)[0]
            unit = _paint_unit(settings, k, prompt, negative, size, key)
            truncated += bool(runner.token_limits([unit], settings))
            ((_, picture),) = next(runner.execute(folder.root, [unit], settings))
            image = picture.image
            row = Step(k, step_name(k), caption(image), prompt, unit.params["negative_prompt"], unit.params["seed"])
            row.repeats_step = repeats([r.caption for r in rows], row.caption)
            _commit_step(folder.root, unit, picture, row)
            rows.append(row)
            images.append(image)
            drift.add([image], [row.caption])
            drift.fill(rows)
            _write_csv(folder.root / "chain.csv", rows)
            painted += 1
            bar.update(1)
            if row.repeats_step is not None and fixed is None:
                fixed = (k, row.repeats_step)
                if t.stop_at_fixed_point:
                    break
    last = min(target, len(rows) - 1)
    if fixed and t.stop_at_fixed_point:
        last = min(last, fixed[0])
    rows, images = rows[:last + 1], images[:last + 1]
    _write_outputs(folder, rows, images, settings, source.name, fixed if fixed and fixed[0] <= last else None)
    folder.write_record("telephone-outputs", {"key": outputs_key, "last": last})
    shown_fixed = fixed if fixed and fixed[0] <= last else None
    return ChainResult(folder.root, last, painted, shown_fixed, bool(shown_fixed and t.stop_at_fixed_point),
                       False, truncated, thumbnails(images), [r.caption for r in rows])


def thumbnails(images: list[Image.Image], height: int = 256) -> list[Image.Image]:
    out = []
    for im in images:
        small = im.copy()
        small.thumbnail((max(1, round(height * im.width / im.height)), height))
        out.append(small)
    return out


def _save_input(root: Path, image: Image.Image, row: Step, key: str) -> None:
    """Step 0: the input as the chain saw it; nothing was painted, so no A1111 parameters."""
    from PIL.PngImagePlugin import PngInfo

    from .runfolder import atomic_path

    info = PngInfo()
    info.add_itxt(CHUNK, row.chunk(key))
    with atomic_path(root / row.image) as tmp:
        image.save(tmp, format="PNG", pnginfo=info, compress_level=4)


def _paint_unit(settings: Settings, k: int, prompt: str, negative: str, size: tuple[int, int], key: str) -> Unit:
    """Step k's paint unit: the generate stage's seed rule and negative prompt, the step before as
    img2img's init picture."""
    from .units import merge_negative, paint_params, seed_for

    g = settings.generate
    params = paint_params(prompt, merge_negative(negative, g), seed_for(g, k), size, g.steps, g.guidance,
                          g.strength, g.lora, leading={"Telephone step": k})
    return Unit(step_name(k), "paint", (step_name(k - 1),) if g.strength else (), params, key)


def _commit_step(root: Path, unit: Unit, painted: Painted, row: Step) -> None:
    """Write step k's PNG: the generate stage's A1111 text, and the chain's row and key."""
    from .pngmeta import save_png
    from .stages.generate import a1111_text

    save_png(painted.image, root / unit.name, a1111_text(unit.params, painted), {CHUNK: row.chunk(unit.key)})


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _write_csv(path: Path, rows: list[Step]) -> None:
    import pandas as pd

    from .tables import write_csv

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
    from .stages.assemble import slideshow
    from .strip import drift_plot, make_strip, save_strip

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


# -- the command ----------------------------------------------------------------------------------


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


def telephone(source: str | Path, out: RunFolder, settings: Settings, force: bool = False,
              on_ready: Callable[[], None] | None = None, models: ModelCache | None = None,
              backend: str | Backend = "local") -> TelephoneResult:
    """Play the telephone game from an image, each image of a folder, or each frame of a video.
    `settings` are chain_settings(...) (interrogate.mode is the telephone's)."""
    from .models.cache import ModelCache

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
    from .strip import make_strip, save_strip, stack

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


# -- a video: every frame goes round, one round after another --------------------------------------


def round_prompts(r: int) -> str:
    return "prompts.csv" if r == 1 else f"prompts_r{r:02d}.csv"


class RoundView(RunFolder):
    """Round r of a video's telephone game, seen by the interrogate and generate stages as a run
    folder whose 'frames' are round r-1's dreams (frames/ for round 1) and whose prompts.csv and
    dreams/ are the round's own. Its extract key also names the round's source pictures, so the
    stages redo a round whose source changed. Round 1 is the run folder itself."""

    def __init__(self, run: RunFolder, r: int, source_key: str | None) -> None:
        from .stages.assemble import round_folder

        super().__init__(run.root)
        self.round = r
        self._source = "frames" if r == 1 else round_folder(r - 1)
        self._dreams = round_folder(r)
        self._source_key = source_key

    frames_dir = property(lambda self: self.root / self._source)
    prompts_csv = property(lambda self: self.root / round_prompts(self.round))
    dreams_dir = property(lambda self: self.root / self._dreams)

    def read_record(self, name: str) -> dict[str, Any] | None:
        data = super().read_record(name)
        if name == "extract" and data and self.round > 1:
            data = {**data, "key": stable_hash(data.get("key"), self.round, self._source_key)}
        return data


def _round_source_key(view: RoundView) -> str:
    """What the round's dreams are: the keys their PNGs carry (equal keys, equal pictures)."""
    from .pngmeta import read_png_text
    from .stages.generate import KEY_CHUNK
    from .tables import read_frames

    names = read_frames(view.frames_csv)["filename"].tolist()
    return stable_hash([read_png_text(view.dreams_dir / n).get(KEY_CHUNK) for n in names])


def play_video(video: Path, run: RunFolder, settings: Settings, models: ModelCache, force: bool = False,
               on_ready: Callable[[], None] | None = None, backend: str | Backend = "local") -> TelephoneResult:
    from .stages.assemble import assemble_grid, round_folder
    from .stages.extract import extract
    from .stages.generate import generate
    from .stages.interrogate import interrogate
    from .tables import read_frames

    t, g = settings.telephone, settings.generate
    if run.root.is_dir() and not run.frames_csv.is_file() and (run.root / step_name(0)).is_file():
        raise UserError(f"{run.root} holds an image's telephone chain; give another -o folder for a video")
    extract(run, video, settings, force=force, on_ready=on_ready)
    result = TelephoneResult("video", run.root)
    names = read_frames(run.frames_csv)["filename"].tolist()
    history: dict[str, list[str]] = {n: [] for n in names}  # captions of each frame, round by round
    source_key = None
    for r in range(1, t.steps + 1):
        view = RoundView(run, r, source_key)
        rs = replace_section(settings, "generate", seed=g.seed + (r - 1) * SEED_STRIDE)
        done = interrogate(view, rs, force=force, models=models, backend=backend)
        captions = _captions(view)
        if t.stop_at_fixed_point and r > 1 and all(captions[n] in history[n] for n in names):
            result.stopped_round = r
            # The prompts were written; their dreams would repeat earlier ones: leave them out.
            break
        for n in names:
            history[n].append(captions[n])
        painted = generate(view, rs, force=force, models=models, backend=backend)
        if done.done or painted.painted:
            result.rounds_painted += 1
        source_key = _round_source_key(view)
        result.rounds = r
    folders = ["frames"] + [round_folder(r) for r in range(1, result.rounds + 1)]
    _video_drift(run, names, folders, history, settings, models)
    result.grid = assemble_grid(run, settings, force=force, rounds=result.rounds).output
    return result


def _captions(view: RoundView) -> dict[str, str]:
    from .stages.interrogate import read_prompts

    df = read_prompts(view)
    return {row.filename: normalised(str(row.caption)) for row in df.itertuples(index=False)}


def _video_drift(run: RunFolder, names: list[str], folders: list[str], history: dict[str, list[str]],
                 settings: Settings, models: ModelCache) -> None:
    """drift.csv and drift.png of a video's rounds: means over the frames."""
    import pandas as pd
    import torch

    from .strip import drift_plot
    from .tables import write_csv

    clip = models.clip(settings)
    feats = []
    for folder in folders:
        per = []
        for start in range(0, len(names), 16):
            batch = [load_image(run.root / folder / n) for n in names[start:start + 16]]
            per.append(clip.image_features(batch).cpu())
        feats.append(torch.cat(per))
    # history[n][r - 1]: the caption of round r-1's picture (r = 1: the frame's own).
    rounds_captioned = min(len(h) for h in history.values()) if history else 0
    texts = [clip.text_features([history[n][k] for n in names]).cpu() for k in range(rounds_captioned)]
    rows = []
    for r, folder in enumerate(folders):
        to_frames = float((feats[r] * feats[0]).sum(-1).mean())
        to_prev = float((feats[r] * feats[r - 1]).sum(-1).mean()) if r else None
        cap = float((texts[r] * texts[r - 1]).sum(-1).mean()) if 0 < r < rounds_captioned else None
        same = (sum(1 for n in names if history[n][r] in history[n][:r]) if 0 < r < rounds_captioned else None)
        rows.append({"round": r, "folder": folder, "clip_to_frames": _fmt(to_frames), "clip_to_previous": _fmt(to_prev),
                     "caption_to_previous": _fmt(cap), "captions_repeated": "" if same is None else same,
                     "_v": (to_frames, to_prev, cap)})
    write_csv(run.root / "drift.csv", pd.DataFrame([{k: v for k, v in row.items() if k != "_v"} for row in rows],
                                                   columns=ROUND_COLUMNS))
    name = Path((run.read_record("source") or {}).get("path", run.root.name)).name
    drift_plot([row["round"] for row in rows],
               {"dreams vs the frames (mean)": [row["_v"][0] for row in rows],
                "dreams vs the previous round (mean)": [row["_v"][1] for row in rows],
                "captions vs the previous round's (mean)": [row["_v"][2] for row in rows]},
               run.root / "drift.png", "round (0: the extracted frames)",
               f"{name}: how far the telephone rounds drift", describe(settings))


__all__ = ["telephone", "run_chain", "play_video", "chain_settings", "input_kind", "load_image"]
