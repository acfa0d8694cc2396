"""Benchmark the generate stage against a naive loop, in the same run.

naive:  the diffusers pipeline called once per frame, each PNG saved in the loop (what a first
        script does).
ours:   `video2dream generate`'s stage function: batches, a CPU generator per frame, PNGs with A1111
        parameters written on a writer thread while the next batch is painted.

Also reports the stage's wall time divided by the time spent inside model calls (target <= 1.05:
file work must hide behind the model). Defaults use the tiny preset on the CPU; on a GPU pass e.g.
`--preset default --device cuda` (with the weights in the HF cache).

    python scripts/bench_generate.py --frames 16 --size 512
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import time_inside  # noqa: E402

from video2dream.media import ffmpeg_path  # noqa: E402
from video2dream.runfolder import RunFolder  # noqa: E402
from video2dream.settings import resolve  # noqa: E402
from video2dream.stages.extract import extract  # noqa: E402
from video2dream.stages.generate import generate, plan  # noqa: E402
from video2dream.stages.interrogate import interrogate  # noqa: E402


def make_run(work: Path, frames: int, settings) -> RunFolder:
    clip = work / "clip.mp4"
    subprocess.run([ffmpeg_path(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=640x480:rate=25:duration={frames}", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    run = RunFolder(work / "run")
    extract(run, clip, settings)
    interrogate(run, settings)
    return run


def naive(run: RunFolder, settings) -> float:
    """Load once, then pipe(prompt) and image.save() per frame, all in one thread."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    from video2dream.models import hub
    from video2dream.models.devices import pick_device, pick_dtype

    g = settings.generate
    device = pick_device(settings.device)
    pipe = StableDiffusionXLPipeline.from_pretrained(hub.resolve(g.model),
                                                     torch_dtype=pick_dtype(settings.dtype, device))
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    jobs, (w, h) = plan(run, settings)
    out = run.root / "naive"
    out.mkdir(exist_ok=True)
    sync(device)
    t0 = time.perf_counter()
    for j in jobs:
        image = pipe(j.prompt, negative_prompt=j.negative_prompt, width=w, height=h,
                     num_inference_steps=g.steps, guidance_scale=g.guidance,
                     generator=torch.Generator("cpu").manual_seed(j.seed)).images[0]
        image.save(out / j.name)
    sync(device)
    return time.perf_counter() - t0


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(run: RunFolder, settings) -> tuple[float, float, float]:
    """(stage wall time, loop wall time, time inside Painter.paint)."""
    from video2dream.models.painter import Painter

    with time_inside(Painter, "paint") as clock:
        shutil.rmtree(run.dreams_dir, ignore_errors=True)
        t0 = time.perf_counter()
        generate(run, settings, force=True)
        end = time.perf_counter()
    return end - t0, end - clock["first"], clock["inside"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=512, help="dream width and height")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    over = {"generate": {"width": args.size, "height": args.size, "batch_size": args.batch_size},
            "interrogate": {"mode": "caption"}}
    if args.steps:
        over["generate"]["steps"] = args.steps
    if args.device:
        over["device"] = args.device
    settings = resolve(preset=args.preset, overrides=over)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), args.frames, settings)
        # Interleaved, best of `repeat` each: a noisy machine slows both alike.
        naive_runs, our_runs = [], []
        for _ in range(args.repeat):
            our_runs.append(ours(run, settings))
            naive_runs.append(naive(run, settings))
        naive_s = min(naive_runs)
        stage, loop, inside = min(our_runs, key=lambda r: r[1])
    n = args.frames
    print(f"generate: {n} frames, {args.size}x{args.size}, {settings.generate.steps} steps, "
          f"preset {args.preset}, batch {args.batch_size}, threads {os.cpu_count()}")
    print(f"{'':34}{'seconds':>9}{'s/frame':>9}")
    print(f"{'naive loop (pipe + save per frame)':34}{naive_s:9.2f}{naive_s / n:9.3f}")
    print(f"{'video2dream generate (stage)':34}{stage:9.2f}{stage / n:9.3f}")
    print(f"{'  of which the painting loop':34}{loop:9.2f}{loop / n:9.3f}")
    print(f"{'  of which inside model calls':34}{inside:9.2f}{inside / n:9.3f}")
    print(f"speed-up over naive (loop): {naive_s / loop:.2f}x; "
          f"loop wall / model time: {loop / inside:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
