"""Draw one frame's dream and its `generate --variants` candidates as a strip, each labelled with its seed;
and (--measure) time `--variants K` against a plain generate on the same frames.

Without RUN_DIR it makes a tiny-preset run (a short clip, hand-written prompts, their dreams and
the candidates) in a temporary folder: the README's docs/variants_tiny.png.

    python scripts/variants_strip.py docs/variants_tiny.png --variants 4
    python scripts/variants_strip.py /tmp/v.png --variants 4 --frames 3 --measure
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import make_clip, offline_env  # noqa: E402

from video2dream.runfolder import RunFolder  # noqa: E402
from video2dream.settings import resolve  # noqa: E402
from video2dream.strip import make_strip, save_strip  # noqa: E402

PROMPTS = ["a red lighthouse on a cliff at dawn", "a blue whale under a starry sky", "a green forest in fog"]


def tiny_run(work: Path, frames: int, size: int, count: int, measure: bool) -> tuple[RunFolder, object, dict]:
    import pandas as pd

    from video2dream.models.cache import ModelCache
    from video2dream.stages.extract import extract
    from video2dream.stages.generate import generate
    from video2dream.stages.variants import generate_variants

    settings = resolve(preset="tiny", overrides={"generate": {"width": size, "height": size, "batch_size": 1}})
    run = RunFolder(work / "run")
    extract(run, make_clip(work / "clip.mp4", frames, size="320x240"), settings)
    names = [f"{k:06d}.png" for k in range(1, frames + 1)]
    pd.DataFrame({"filename": names, "prompt": (PROMPTS * frames)[:frames]}).to_csv(run.prompts_csv, index=False)
    models = ModelCache()
    models.painter(settings)  # loaded once, before the clocks: both timings are painting alone
    t = time.perf_counter()
    generate(run, settings, models=models)
    plain = time.perf_counter() - t
    t = time.perf_counter()
    generate_variants(run, settings, count, models=models)
    variants = time.perf_counter() - t
    times = {"plain": plain, "variants": variants} if measure else {}
    return run, settings, times


def draw(run: RunFolder, settings, frame: str, dest: Path, title: str, tile_height: int) -> None:
    from PIL import Image

    from video2dream.stages.generate import plan
    from video2dream.stages.variants import candidate_seed, variants_dir

    job = next(j for j in plan(run, settings)[0] if j.name == frame)
    found = sorted(variants_dir(run).glob(f"{Path(frame).stem}_*.png"))
    if not found:
        raise SystemExit(f"no candidates of {frame} in {variants_dir(run)}; run `video2dream generate --variants K`")
    paths = [run.dreams_dir / frame, *found]
    images = [Image.open(p).convert("RGB") for p in paths]
    labels = ["dream", *(f"candidate {p.stem.rsplit('_', 1)[1].lstrip('0')}" for p in found)]
    # seeds are up to 19 digits: under the picture, where captions wrap
    captions = [f"seed {job.seed}: {job.prompt}", *(f"seed {candidate_seed(p)}" for p in found)]
    save_strip(make_strip(images, captions, labels, title=title, tile_height=tile_height), dest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--run", type=Path, help="a run folder with candidates (default: make a tiny-preset one)")
    ap.add_argument("--frame", default="000001.png")
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--frames", type=int, default=1, help="frames of the tiny run (seconds of its clip at 1 fps)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--tile-height", type=int, default=112)
    ap.add_argument("--measure", action="store_true", help="also print the painting time of both, and their ratio")
    args = ap.parse_args()
    offline_env()
    if args.run:
        run = RunFolder(args.run)
        draw(run, resolve(run.saved_settings()), args.frame, args.dest, f"candidates of {run.root.name}",
             args.tile_height)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        run, settings, times = tiny_run(Path(tmp), args.frames, args.size, args.variants, args.measure)
        title = (f"tiny-preset output (random models: noise, not art): a dream and its {args.variants} "
                 "candidates (generate --variants)")
        draw(run, settings, args.frame, args.dest, title, args.tile_height)
    if times:
        print(f"{args.frames} frame(s) at {args.size}x{args.size}, tiny preset, models loaded: plain generate "
              f"{times['plain']:.2f} s, --variants {args.variants} {times['variants']:.2f} s, "
              f"ratio {times['variants'] / times['plain']:.2f}")
    print(f"wrote {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
