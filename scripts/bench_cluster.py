"""How far one driver of --backend ray scales (a benchmark, not a test).

1. Throughput against actors: a fake painter (tests/fake_painter.py) sleeping --latency seconds per unit,
   on 1, 2, 4 and 8 actors of a local Ray instance (fractional CPUs: the actors only sleep). The pool
   is warmed up first (models "loaded"), then timed on a second call that reuses it.
2. The driver's memory: its RSS (from /proc) while --memory-units fake units, each with a ~300 KB
   input picture, go through 4 actors.
3. The driver's own ceiling: results a second it can take in and commit (raw pixels -> PIL, PNG
   encode with its A1111 text, write, rename: pngmeta.save_png, as generate's commit), at --side px.

    PYTHONPATH=.:tests python scripts/bench_cluster.py --latency 0.5 --actors 1 2 4 8
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def rss_mb() -> float:
    """This process's resident memory, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def units_for(run: Path, count: int, distinct: int = 20, side: int = 320) -> list:
    """Paint units reading frames/NNNNNN.png; distinct noise pictures (~300 KB each), cycled."""
    import numpy as np
    from PIL import Image

    from video2dream.units import Unit, paint_params

    (run / "frames").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(1, distinct + 1):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(run / "frames" / f"{k:06d}.png")
    return [Unit(f"{k:06d}.png", "paint", (f"frames/{(k - 1) % distinct + 1:06d}.png",),
                 paint_params("p", "", k, (side, side), 1, 5.0, 0.5, None), "key") for k in range(1, count + 1)]


def backend(actors: int):
    from fake_painter import FakePainter

    from video2dream.backends import get
    from video2dream.settings import resolve

    b = get("ray")
    b.inner = FakePainter
    return b, resolve(preset="tiny", overrides={"backend": "ray", "workers": actors, "ray": {"cpus": 0.1},
                                                        "generate": {"batch_size": 1}})


def warm(b, settings, run: Path, actors: int) -> None:
    """Start the pool and wait until every actor is up (the timed call reuses it)."""
    import ray

    for _ in b.execute(run, units_for(run, actors), settings):
        pass
    for pool in b.pools.values():
        ray.wait(list(pool.starting), num_returns=len(pool.starting))
    for _ in b.execute(run, units_for(run, 4 * actors), settings):  # every actor's first calls (imports)
        pass


def throughput(run: Path, actors: int, per_actor: int) -> float:
    b, settings = backend(actors)
    warm(b, settings, run, actors)
    units = units_for(run, per_actor * actors)
    start = time.perf_counter()
    for _ in b.execute(run, units, settings):
        pass
    rate = len(units) / (time.perf_counter() - start)
    del b
    return rate


def memory(run: Path, count: int) -> tuple[float, float]:
    """(RSS before, peak RSS while count units run), MB."""
    b, settings = backend(4)
    warm(b, settings, run, 4)
    units = units_for(run, count)
    before = peak = rss_mb()
    for _ in b.execute(run, units, settings):
        peak = max(peak, rss_mb())
    del b
    return before, peak


def ceiling(folder: Path, side: int, count: int) -> float:
    """Results a second the driver commits: from raw pixels to a renamed PNG with its text."""
    import numpy as np

    from video2dream.backends.ray import from_row
    from video2dream.pngmeta import save_png

    rng = np.random.default_rng(1)
    # a photo-like picture: smooth gradients and mild noise (pure noise would be the worst case)
    y, x = np.mgrid[0:side, 0:side]
    base = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], -1)
    pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8).tobytes()
    row = {"mode": "RGB", "width": side, "height": side, "pixels": pixels, "sampler": "Euler a", "model": "sdxl"}
    start = time.perf_counter()
    for k in range(count):
        painted = from_row("paint", row)
        save_png(painted.image, folder / f"{k:06d}.png", "a prompt\nSteps: 30, Sampler: Euler a", {"key": "k"})
    return count / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.5, help="seconds the fake painter takes per unit")
    ap.add_argument("--actors", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--per-actor", type=int, default=6, help="units per actor in the timed call")
    ap.add_argument("--memory-units", type=int, nargs="*", default=[100, 2000])
    ap.add_argument("--side", type=int, default=1024, help="pixels of a committed picture's side (SDXL: 1024; "
                    "0: skip the ceiling)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": {"FAKE_PAINTER_LATENCY": str(args.latency),
                                       "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}})
    with tempfile.TemporaryDirectory() as tmp:
        one = None
        for n in args.actors:
            rate = throughput(Path(tmp) / f"t{n}", n, args.per_actor)
            one = one or rate
            print(f"actors {n}: {rate:.2f} units/s ({rate / one / n:.2f} x N of one actor's)", flush=True)
        ray.shutdown()  # the memory runs: a painter that answers almost at once
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 runtime_env={"env_vars": {"FAKE_PAINTER_LATENCY": "0.01",
                                           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}})
        for count in args.memory_units:
            before, peak = memory(Path(tmp) / f"m{count}", count)
            print(f"memory, {count} units of ~300 KB inputs: driver RSS {before:.0f} MB before, peak {peak:.0f} MB",
                  flush=True)
        ray.shutdown()
        out = Path(tmp) / "commit"
        out.mkdir()
        if args.side:
            rate = ceiling(out, args.side, 20)
            print(f"driver ceiling: {rate:.1f} results/s committed at {args.side}x{args.side}", flush=True)


if __name__ == "__main__":
    main()
