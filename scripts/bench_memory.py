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
run, the peak of each quarter, and per stage the peak of its first and second half. It exits non-zero
when interrogate's or generate's second half peaks above 1.3x its first (memory growing with frames).
"""

from __future__ import annotations

import argparse
import os
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
    return max(m for _, m, _ in samples), seconds


def rss_over_time(cmd: list[str], every: float = 0.02,
                  label=lambda: "") -> tuple[list[tuple[float, float, str]], float]:
    """([(seconds since start, MiB of the process tree, label())], seconds) for cmd, sampled every `every` s."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[tuple[float, float, str]] = [(0.0, 0.0, "")]
    done = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
                samples.append((time.perf_counter() - t0, rss / 2**20, label()))
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


def stage_of(run: Path, frames: int) -> str:
    """The stage `run` is in, by the files that have appeared (a few ms per call)."""
    if not (run / ".video2dream" / "extract.json").is_file():
        return "extract"
    try:
        rows = (run / "prompts.csv").read_bytes().count(b"\n") - 1
    except OSError:
        rows = 0
    if rows < frames:
        return "interrogate"
    dreams = run / "dreams"
    if not dreams.is_dir() or sum(1 for e in os.scandir(dreams) if e.name.endswith(".png")) < frames:
        return "generate"
    return "assemble"


def run_over_time(seconds: int) -> int:
    """`video2dream run --preset tiny` on a clip of `seconds`; memory by quarter of the run and by
    stage (the first and the second half of each stage's time: flat memory means equal halves)."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / f"clip{seconds}.mp4", seconds)
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "video2dream", "run", str(clip), "-o", str(run), "--preset", "tiny"]
        samples, total = rss_over_time(cmd, every=0.1, label=lambda: stage_of(run, seconds))
        frames = len(list((run / "dreams").glob("*.png")))
    quarters = [max((m for t, m, _ in samples if k * total / 4 <= t <= (k + 1) * total / 4), default=0.0)
                for k in range(4)]
    upto = [max(quarters[: k + 1]) for k in range(4)]
    print(f"`run --preset tiny`, {seconds} s clip, {frames} dreams, {total:.0f} s, {len(samples)} samples")
    print(f"peak MiB up to 1/4: {upto[0]:.0f}, up to 1/2: {upto[1]:.0f}, end: {upto[3]:.0f}")
    print("peak MiB per quarter: " + ", ".join(f"{q:.0f}" for q in quarters))
    worst = 0.0
    for stage in ("extract", "interrogate", "generate", "assemble"):
        times = [t for t, _, s in samples if s == stage]
        if not times:
            continue
        mid = (times[0] + times[-1]) / 2
        first = max(m for t, m, s in samples if s == stage and t <= mid)
        second = max(m for t, m, s in samples if s == stage and t >= mid)
        if stage in ("interrogate", "generate"):  # the stages that loop over the frames in one process
            worst = max(worst, second / first)
        print(f"{stage:>12}: {times[-1] - times[0]:6.1f} s, peak MiB first half {first:.0f}, "
              f"second half {second:.0f} ({second / first:.2f}x)")
    print(f"worst second half / first half of a stage: {worst:.2f}x (limit 1.3x)")
    return 0 if worst <= 1.3 else 1


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
