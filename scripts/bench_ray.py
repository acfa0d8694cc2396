"""generate on the local backend vs the Ray backend with 1 and 2 actors, on the same frames, in one run.

Extracts and interrogates a synthetic clip once (locally), then paints its dreams three times, each
a `video2dream generate` subprocess on a fresh copy of that folder: --backend local, --backend ray
--workers 1, --backend ray --workers 2 (each Ray command starts its own local Ray instance, as a user's
command does). Per variant: the wall time, the Ray start-up (ray.init, from the command's own line)
reported apart, the wall without it, and the peak RSS of the whole process tree (the command, Ray's
GCS, raylet and workers), sampled every 0.1 s. The dreams of every variant must be identical (batch
size 1, OMP_NUM_THREADS=1 unless set). Exits non-zero when they are not, or when 1 actor takes
more than --limit x local's wall without the start-up.

    python scripts/bench_ray.py                          # tiny preset, 12 frames at 512x512, 4 steps
    python scripts/bench_ray.py --frames 4 --size 64 --limit 0   # a smoke run (no limit)
    python scripts/bench_ray.py --preset default --frames 8          # real models, where they are cached

On a GPU machine (`--device auto`, the default) the Ray actors take one GPU each (num_gpus=1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from benchlib import ROOT, make_clip, offline_env, print_table

STARTUP = re.compile(r"started a local Ray instance in ([0-9.]+) s")


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process that just ended
            total += p.memory_info().rss
    return total


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak MiB of the process tree, stderr) of cmd."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)  # each Ray variant starts (and pays for) its own local instance
    # The same torch threads everywhere: a CPU's float sums depend on how many threads share them
    # (another count, other last bits), and Ray would give an actor as many as its num_cpus.
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(root))
            except psutil.Error:
                return
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, peak / 2**20, err


def handover(size: int, paint_s: float) -> None:
    """What the driver pays per dream for committing it itself: the result made plain data in the
    worker (raw pixels), a picture again here, and the PNG commit; against the paint time per frame."""
    import numpy as np
    from PIL import Image

    from video2dream.backends.base import Painted
    from video2dream.backends.ray import from_row, to_row
    from video2dream.pngmeta import save_png

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        for _ in range(5):
            row = to_row(Painted(image, "Euler", "m"))
            back = from_row("paint", row)
        t1 = time.perf_counter()
        for k in range(5):
            save_png(back.image, Path(folder) / f"{k}.png", "text", {"video2dream": "key"})
        t2 = time.perf_counter()
    print(f"driver commits: per {size}x{size} dream {(t1 - t0) / 5 * 1000:.1f} ms to hand the pixels over "
          f"({len(row['pixels']) / 2**20:.1f} MiB) and {(t2 - t1) / 5 * 1000:.1f} ms to write the PNG"
          + (f", against {paint_s:.2f} s of painting" if paint_s else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=12, help="frames to paint (default 12)")
    ap.add_argument("--size", type=int, default=512, help="dream width and height (default 512)")
    ap.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    ap.add_argument("--preset", default="tiny", help="settings preset (default tiny)")
    ap.add_argument("--device", default="auto", help="--device of every variant (default auto)")
    ap.add_argument("--variants", default="local,ray1,ray2", help="which of local, ray1, ray2 (default all)")
    ap.add_argument("--limit", type=float, default=1.15,
                    help="fail when ray1's wall without start-up is above this x local's (0: no limit)")
    args = ap.parse_args()
    offline_env()
    py = [sys.executable, "-m", "video2dream"]
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    try:
        clip = make_clip(work / "clip.mp4", args.frames, size="320x240")
        base = work / "base"
        common = ["--preset", args.preset, "--device", args.device]
        for step in (["extract", clip, "-o", base, "--fps", "1", "--preset", args.preset],
                     ["interrogate", base, *common]):
            subprocess.run([*py, *map(str, step)], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        size = ["--width", str(args.size), "--height", str(args.size)]
        gen = ["--steps", str(args.steps), *size, "--batch-size", "1", *common]
        variants = {"local": ["--backend", "local"], "ray1": ["--backend", "ray", "--workers", "1"],
                    "ray2": ["--backend", "ray", "--workers", "2"]}
        rows, walls, pictures = [], {}, {}
        for name in args.variants.split(","):
            run = work / name
            shutil.copytree(base, run)
            seconds, mib, err = measure([*py, "generate", str(run), *variants[name], *gen])
            found = STARTUP.search(err)
            startup = float(found[1]) if found else 0.0
            walls[name] = seconds - startup
            pictures[name] = {p.name: p.read_bytes() for p in sorted((run / "dreams").glob("*.png"))}
            rows.append([name, seconds, startup, walls[name], walls[name] / args.frames, mib])
        print_table(f"generate, {args.preset} preset, {args.frames} frames at {args.size}x{args.size}, "
                    f"{args.steps} steps, batch 1, {os.cpu_count()} CPUs",
                    ["variant", "wall s", "ray start s", "wall - start s", "s/frame", "peak MiB"], rows)
        if "local" in walls:
            for name in walls:
                print(f"{name}: {walls[name] / walls['local']:.2f}x local's wall (start-up excluded)")
        handover(args.size, walls.get("local", 0.0) / args.frames)
        first = next(iter(pictures))
        differ = [n for n in pictures if pictures[n] != pictures[first]]
        same = not differ
        print("dreams identical across variants" if same else f"DREAMS DIFFER: {', '.join(differ)} vs {first}")
        ratio = walls.get("ray1", 0) / walls["local"] if "local" in walls else 0
        if not same or (args.limit and ratio > args.limit):
            return 1
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
