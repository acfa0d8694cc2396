"""Draw one morph as a strip: keyframe A, its in-betweens, keyframe B, each labelled with its t.

Without RUN_DIR it makes a tiny-preset run (a 2-second clip, two hand-written prompts, their dreams and
the in-betweens between them) in a temporary folder: the README's docs/morph_strip.png.

    python scripts/morph_strip.py docs/morph_strip.png --inbetweens 5
    python scripts/morph_strip.py strip.png --run runs/clip --gap 000003.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import make_clip, offline_env  # noqa: E402

from video2dream.runfolder import RunFolder  # noqa: E402
from video2dream.settings import resolve  # noqa: E402
from video2dream.stages import morph as mo  # noqa: E402
from video2dream.strip import make_strip, save_strip  # noqa: E402

PROMPTS = ["a red lighthouse on a cliff at dawn", "a blue whale under a starry sky"]


def tiny_run(work: Path, inbetweens: int, size: int) -> tuple[RunFolder, object]:
    import pandas as pd

    from video2dream.stages.extract import extract
    from video2dream.stages.generate import generate

    settings = resolve(preset="tiny", overrides={"generate": {"width": size, "height": size},
                                                 "morph": {"inbetweens": inbetweens}})
    run = RunFolder(work / "run")
    extract(run, make_clip(work / "clip.mp4", 2, size="320x240"), settings)
    pd.DataFrame({"filename": ["000001.png", "000002.png"], "prompt": PROMPTS}).to_csv(run.prompts_csv, index=False)
    generate(run, settings)
    mo.morph(run, settings)
    return run, settings


def draw(run: RunFolder, settings, gap: str, dest: Path, title: str, tile_height: int) -> None:
    from PIL import Image

    shown = [m for m in mo.plan(run, settings) if m.a.name == gap]
    if not shown:
        raise SystemExit(f"no in-betweens after {gap} in {run.root}; run `video2dream morph` first")
    a, b = shown[0].a, shown[0].b
    paths = [run.dreams_dir / a.name, *(run.morphs_dir / m.name for m in shown), run.dreams_dir / b.name]
    images = [Image.open(p).convert("RGB") for p in paths]
    labels = [f"{a.name} (t=0)", *(f"t={m.t:g}" for m in shown), f"{b.name} (t=1)"]
    captions = [a.prompt, *([""] * len(shown)), b.prompt]
    save_strip(make_strip(images, captions, labels, title=title, tile_height=tile_height), dest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--run", type=Path, help="a run folder with in-betweens (default: make a tiny-preset one)")
    ap.add_argument("--gap", default="000001.png", help="the keyframe the morph starts from")
    ap.add_argument("--inbetweens", type=int, default=5)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--tile-height", type=int, default=112)
    args = ap.parse_args()
    offline_env()
    if args.run:
        run = RunFolder(args.run)
        draw(run, resolve(run.saved_settings()), args.gap, args.dest, f"one morph of {run.root.name}",
             args.tile_height)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        run, settings = tiny_run(Path(tmp), args.inbetweens, args.size)
        title = (f"tiny-preset output (random models: noise, not art): {args.inbetweens} in-betweens, "
                 "slerp of the starting noise, lerp of the prompt embeddings")
        draw(run, settings, args.gap, args.dest, title, args.tile_height)
    print(f"wrote {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
