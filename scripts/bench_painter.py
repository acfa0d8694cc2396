"""The painter's speed options, each against the plain pipeline, in the same run.

Loads the SDXL model once per variant and paints the same prompts and seeds at the same size:
  plain        Painter as loaded by default on the CPU (no channels_last, no fused QKV)
  tune         channels_last + fused QKV projections (the CUDA default)
  preview-vae  the tiny AutoencoderTiny decoder (TAESD) instead of the model's VAE
  compile      torch.compile on the UNet (first call, which compiles, timed apart)
  refiner      the base denoises the first 80 %, the refiner (--refiner) the rest
  weighting    --prompt-weighting a1111: prompts encoded through compel, weights and all
  controlnet   a ControlNet (--controlnet) following canny edges of a picture
Best of --repeat calls of one batch; seconds per frame. The tiny preset on the CPU by default. The
prompts carry an A1111 weight ("(painting:1.2)"), read as text by every variant but weighting.

    python scripts/bench_painter.py --size 512 --batch 4
    python scripts/bench_painter.py --model stabilityai/stable-diffusion-xl-base-1.0 --device cuda \
        --preview-vae madebyollin/taesdxl --refiner stabilityai/stable-diffusion-xl-refiner-1.0 \
        --controlnet canny --size 1024 --steps 30
"""

from __future__ import annotations

import argparse
import os
import time

from benchlib import offline_env, print_table, sync


def frame(size: int):
    """A picture with edges for the ControlNet to follow: a bright disc and a bar on dark."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), (30, 40, 60))
    draw = ImageDraw.Draw(im)
    draw.ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(230, 200, 120))
    draw.rectangle((0, 7 * size // 8, size, size), fill=(90, 120, 60))
    return im


def time_paint(painter, n: int, size: int, steps: int, repeat: int) -> tuple[float, float]:
    """(first call seconds, best of `repeat` later calls) for one batch of n."""
    prompts = [f"a (painting:1.2) of a lighthouse, frame {i}" for i in range(n)]
    args = (prompts, [""] * n, list(range(n)), size, size, steps, 5.0)
    control = {"control_frames": [frame(size)] * n} if painter.controlnet is not None else {}
    times = []
    for _ in range(repeat + 1):
        sync()
        t0 = time.perf_counter()
        painter.paint(*args, **control)
        sync()
        times.append(time.perf_counter() - t0)
    return times[0], min(times[1:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny:sdxl")
    ap.add_argument("--preview-vae", default="tiny:taesdxl")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--refiner", default="tiny:sdxl-refiner")
    ap.add_argument("--controlnet", default="canny:tiny:controlnet-sdxl")
    ap.add_argument("--variants", default="plain,tune,preview-vae,compile,refiner,weighting,controlnet")
    args = ap.parse_args()
    offline_env()
    from video2dream.models.painter import Painter

    options = {"plain": dict(tune=False), "tune": dict(tune=True),
               "preview-vae": dict(tune=False, preview_vae=args.preview_vae),
               "compile": dict(tune=False, compile=True), "refiner": dict(tune=False, refiner=args.refiner),
               "weighting": dict(tune=False, prompt_weighting="a1111"),
               "controlnet": dict(tune=False, controlnet=args.controlnet)}
    rows, base = [], None
    for name in args.variants.split(","):
        painter = Painter(args.model, args.device, args.dtype, **options[name])
        first, best = time_paint(painter, args.batch, args.size, args.steps, args.repeat)
        base = base or best
        rows.append([name, first / args.batch, best / args.batch, f"{base / best:.2f}x"])
        del painter
    print(f"painter: {args.model} on {args.device}, {args.size}x{args.size}, {args.steps} steps, "
          f"batch {args.batch}, best of {args.repeat}, threads {os.cpu_count()}")
    print_table("", ["variant", "first call s/frame", "s/frame", "vs plain"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
