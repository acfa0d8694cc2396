"""Peak memory of extract + assemble on a long clip versus a short one (memory must not grow with length).

Makes two 640x360 clips with sound (1 minute and, by default, 10 minutes), runs
`video2dream extract` and `video2dream assemble --from frames` on each in a subprocess, and samples
the summed RSS of the whole process tree (Python and ffmpeg) every 20 ms. Prints a table and exits
non-zero when the long clip's peak is above 1.3x the short one's.

    python scripts/bench_memory.py                 # 1 min vs 10 min
    python scripts/bench_memory.py --long 300      # 1 min vs 5 min
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
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.02)

    t0 = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode(errors='replace')}")
    return peak / 2**20, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", type=int, default=60, help="seconds of the short clip")
    ap.add_argument("--long", type=int, default=600, help="seconds of the long clip")
    args = ap.parse_args()
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
