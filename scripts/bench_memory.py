"""Peak memory of extract + assemble on a long clip versus a short one (memory must not grow with length).

Makes two 640x360 clips with sound (1 minute and, by default, 10 minutes), runs
`video2dream extract` and `video2dream assemble --from frames` on each in a subprocess, and samples
the summed RSS of the whole process tree (Python and ffmpeg) every 20 ms. Prints a table and exits
non-zero when the long clip's peak is above 1.3x the short one's.

    python scripts/bench_memory.py                 # 1 min vs 10 min
    python scripts/bench_memory.py --long 300      # 1 min vs 5 min
    python scripts/bench_memory.py --run 300       # `run --preset tiny` end to end on a 5-minute clip

With --run SECONDS it instead runs the whole pipeline (tiny preset, one frame per second) on one clip of
that length and reports the process tree's memory over time: the peak up to 1/4, 1/2 and the end of the
run, and the peak of each quarter. It exits non-zero when the last quarter's peak is above 1.3x the
second quarter's (memory that grows with the number of frames).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from video2dream.media import ffmpeg_path  # noqa: E402


def make_clip(path: Path, seconds: int) -> Path:
    subprocess.run([ffmpeg_path(), "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=duration={seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-shortest", str(path)], check=True)
    return path


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak MiB of the process tree, seconds)."""
    samples, seconds = rss_over_time(cmd)
    return max(m for _, m in samples), seconds


def rss_over_time(cmd: list[str], every: float = 0.02) -> tuple[list[tuple[float, float]], float]:
    """([(seconds since start, MiB of the process tree)], seconds) for cmd, sampled every `every` s."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[tuple[float, float]] = [(0.0, 0.0)]
    done = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
                samples.append((time.perf_counter() - t0, rss / 2**20))
            except psutil.Error:
                pass
            time.sleep(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode(errors='replace')}")
    return samples, time.perf_counter() - t0


def run_over_time(seconds: int) -> int:
    """`video2dream run --preset tiny` on a clip of `seconds`; memory by quarter of the run."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / f"clip{seconds}.mp4", seconds)
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "video2dream", "run", str(clip), "-o", str(run), "--preset", "tiny"]
        samples, total = rss_over_time(cmd, every=0.1)
        frames = len(list((run / "dreams").glob("*.png")))
    quarters = [max((m for t, m in samples if k * total / 4 <= t <= (k + 1) * total / 4), default=0.0)
                for k in range(4)]
    upto = [max(quarters[: k + 1]) for k in range(4)]
    print(f"`run --preset tiny`, {seconds} s clip, {frames} dreams, {total:.0f} s, {len(samples)} samples")
    print(f"peak MiB up to 1/4: {upto[0]:.0f}, up to 1/2: {upto[1]:.0f}, end: {upto[3]:.0f}")
    print("peak MiB per quarter: " + ", ".join(f"{q:.0f}" for q in quarters))
    ratio = quarters[3] / quarters[1]
    print(f"last quarter / second quarter: {ratio:.2f}x (limit 1.3x)")
    return 0 if ratio <= 1.3 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", type=int, default=60, help="seconds of the short clip")
    ap.add_argument("--long", type=int, default=600, help="seconds of the long clip")
    ap.add_argument("--run", type=int, metavar="SECONDS",
                    help="instead: the whole pipeline (tiny preset) on a clip of SECONDS, memory over time")
    args = ap.parse_args()
    if args.run:
        return run_over_time(args.run)
    exe = [sys.executable, "-m", "video2dream"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in (args.short, args.long):
            clip = make_clip(Path(tmp) / f"clip{seconds}.mp4", seconds)
            run = Path(tmp) / f"run{seconds}"
            ex = peak_rss([*exe, "extract", str(clip), "-o", str(run)])
            asm = peak_rss([*exe, "assemble", str(run), "--from", "frames"])
            rows.append((seconds, ex, asm))
    print(f"{'clip':>8} {'extract MiB':>12} {'s':>7} {'assemble MiB':>13} {'s':>7}")
    for seconds, (em, es), (am, as_) in rows:
        print(f"{seconds:>7}s {em:12.1f} {es:7.1f} {am:13.1f} {as_:7.1f}")
    (_, (e1, _), (a1, _)), (_, (e2, _), (a2, _)) = rows
    ratio = max(e2 / e1, a2 / a1)
    print(f"long/short peak: extract {e2 / e1:.2f}x, assemble {a2 / a1:.2f}x (limit 1.3x)")
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
