"""Benchmark the morph stage: its wall time against its time inside model calls, and seconds per in-between.

The stage is `video2dream morph`'s function, unchanged: plan, the local backend's batches of
Painter.paint_between, PNGs with A1111 parameters committed on a writer thread while the next batch
is painted. The painting loop's wall time divided by the time inside paint_between must be at most
1.05 (file work hides behind the model). Defaults use the tiny preset on the CPU; on a GPU pass e.g.
`--preset default --device cuda --size 1024` (with the weights in the HF cache).

    python scripts/bench_morph.py --keyframes 4 --inbetweens 6 --size 64
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import make_clip, offline_env, time_inside  # noqa: E402

from video2dream.models.cache import ModelCache  # noqa: E402
from video2dream.runfolder import RunFolder  # noqa: E402
from video2dream.settings import resolve  # noqa: E402
from video2dream.stages.extract import extract  # noqa: E402
from video2dream.stages.generate import generate  # noqa: E402
from video2dream.stages.morph import morph  # noqa: E402

PROMPTS = ["a red cat on a roof", "a blue dog in the snow", "a green boat at sea", "a city at night",
           "a forest in autumn", "a desert at noon", "a lighthouse in a storm", "a garden of glass"]


def make_run(work: Path, keyframes: int, settings, models: ModelCache) -> RunFolder:
    """keyframes seconds of clip with sound, one keyframe a second, hand-written prompts, their dreams."""
    import pandas as pd

    clip = make_clip(work / "clip.mp4", keyframes, size="320x240", audio=True)
    run = RunFolder(work / "run")
    extract(run, clip, settings)
    names = [f"{k:06d}.png" for k in range(1, keyframes + 1)]
    prompts = [PROMPTS[k % len(PROMPTS)] for k in range(keyframes)]
    pd.DataFrame({"filename": names, "prompt": prompts}).to_csv(run.prompts_csv, index=False)
    generate(run, settings, models=models)
    return run


def timed_morph(run: RunFolder, settings, models: ModelCache) -> tuple[float, float, float, int]:
    """(stage wall time, painting loop wall time, time inside Painter.paint_between, in-betweens)."""
    from video2dream.models.painter import Painter

    with time_inside(Painter, "paint_between") as clock:
        shutil.rmtree(run.morphs_dir, ignore_errors=True)
        t0 = time.perf_counter()
        r = morph(run, settings, force=True, models=models)
        end = time.perf_counter()
    return end - t0, end - clock["first"], clock["inside"], len(r.painted)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--keyframes", type=int, default=4, help="keyframes, one a second")
    ap.add_argument("--inbetweens", type=int, default=6, help="in-betweens per gap")
    ap.add_argument("--size", type=int, default=64, help="picture width and height")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--pacing", default="linear", choices=("linear", "audio"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    offline_env()
    over: dict = {"generate": {"width": args.size, "height": args.size, "batch_size": args.batch_size},
                  "morph": {"inbetweens": args.inbetweens, "pacing": args.pacing}}
    if args.steps:
        over["generate"]["steps"] = args.steps
    if args.device:
        over["device"] = args.device
    settings = resolve(preset=args.preset, overrides=over)
    models = ModelCache()
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), args.keyframes, settings, models)
        runs = [timed_morph(run, settings, models) for _ in range(args.repeat)]
    stage, loop, inside, n = min(runs, key=lambda r: r[1])
    g = settings.generate
    print(f"morph: {args.keyframes} keyframes, {n} in-betweens ({args.inbetweens} per gap, {args.pacing} pacing), "
          f"{args.size}x{args.size}, {g.steps} steps, preset {args.preset}, batch {args.batch_size}, "
          f"threads {os.cpu_count()}")
    print(f"{'':34}{'seconds':>9}{'s/in-between':>14}")
    print(f"{'morph stage (wall)':34}{stage:9.2f}{stage / n:14.3f}")
    print(f"{'  of which the painting loop':34}{loop:9.2f}{loop / n:14.3f}")
    print(f"{'  of which inside model calls':34}{inside:9.2f}{inside / n:14.3f}")
    print(f"loop wall / model time: {loop / inside:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
