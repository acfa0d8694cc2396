#!/usr/bin/env python3
"""Is `video2dream extract` as fast as a bare ffmpeg doing the same job?

Times `ffmpeg -i VIDEO -vf fps=1 OUT/%06d.png` against `video2dream extract VIDEO -o RUN` (same
ffmpeg binary, both writing ffmpeg's default PNGs), best of N runs each, interleaved so that a
slow moment of the machine hits both. The video2dream side includes everything a user waits for:
Python start-up, probing, fingerprinting, frames.csv and the run folder's records.

Without --video it makes a 3-minute 1280x720 clip (testsrc2 at 30 fps + a sine, libx264 veryfast)
in the work folder, and reuses it when it is already there.

    python scripts/bench_extract.py                     # exit status 1 if the ratio is above 1.25
    python scripts/bench_extract.py --video clip.mp4 --runs 5 --max-ratio 1.1
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from video2dream.media import ffmpeg_path


def make_clip(path: Path, seconds: float, ffmpeg: str) -> None:
    print(f"making a {seconds:g} s 1280x720 test clip: {path}", file=sys.stderr, flush=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(tmp)],
        check=True,
    )
    tmp.replace(path)


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, all threads) of a command."""
    cpu = cpu_of_children()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
    return took, cpu_of_children() - cpu


def bare_ffmpeg(ffmpeg: str, video: Path, out: Path) -> tuple[float, float, int]:
    out.mkdir(parents=True)
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(video),
           "-vf", "fps=1", str(out / "%06d.png")]
    took, cpu = timed(cmd)
    count = len(list(out.glob("*.png")))
    shutil.rmtree(out)
    return took, cpu, count


def video2dream(ffmpeg: str, video: Path, run: Path) -> tuple[float, float, int]:
    env = dict(os.environ, VIDEO2DREAM_FFMPEG=ffmpeg)  # the very same binary as the bare run
    cmd = [sys.executable, "-m", "video2dream", "extract", str(video), "-o", str(run)]
    took, cpu = timed(cmd, env)
    count = len(list((run / "frames").glob("*.png")))
    shutil.rmtree(run)
    return took, cpu, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, help="time this video instead of the made-up clip")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, best counts (default 3)")
    parser.add_argument("--max-ratio", type=float, default=1.25,
                        help="fail when video2dream takes more than this times as long as ffmpeg "
                        "(default 1.25)")
    parser.add_argument("--seconds", type=float, default=180.0,
                        help="length of the made-up clip (default 180)")
    parser.add_argument("--workdir", type=Path,
                        help="where the clip and the outputs go (default: a temporary folder, "
                        "removed afterwards; a clip already there is reused)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    ffmpeg = ffmpeg_path()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-extract-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        video = args.video
        if video is None:
            video = workdir / f"bench-1280x720-{args.seconds:g}s.mp4"
            if not video.is_file():
                make_clip(video, args.seconds, ffmpeg)
        if not video.is_file():
            parser.error(f"no such video: {video}")

        times: dict[str, list[float]] = {"ffmpeg": [], "video2dream": []}
        cpus: dict[str, list[float]] = {"ffmpeg": [], "video2dream": []}
        counts: dict[str, set[int]] = {"ffmpeg": set(), "video2dream": set()}
        for i in range(args.runs):
            # Alternate which goes first, so neither always gets the warmer page cache.
            order = ["ffmpeg", "video2dream"] if i % 2 == 0 else ["video2dream", "ffmpeg"]
            for name in order:
                if name == "ffmpeg":
                    took, cpu, count = bare_ffmpeg(ffmpeg, video, workdir / f"bare-{i}")
                else:
                    took, cpu, count = video2dream(ffmpeg, video, workdir / f"run-{i}")
                times[name].append(took)
                cpus[name].append(cpu)
                counts[name].add(count)
                print(f"run {i + 1}/{args.runs} {name:<12} {took:7.2f} s  (cpu {cpu:.2f} s)  "
                      f"{count} frames", file=sys.stderr, flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    best = {name: min(values) for name, values in times.items()}
    ratio = best["video2dream"] / best["ffmpeg"]
    cpu_ratio = min(cpus["video2dream"]) / min(cpus["ffmpeg"])
    print(f"video: {video}")
    print(f"ffmpeg: {ffmpeg}")
    runs = "".join(f"{f'run {i + 1}':>8}" for i in range(args.runs))
    print(f"{'seconds (wall clock)':<28}{'frames':>7}{runs}{'best':>8}{'best cpu':>10}")
    labels = {"ffmpeg": "ffmpeg -vf fps=1 (bare)", "video2dream": "video2dream extract --fps 1"}
    for name, label in labels.items():
        cells = "".join(f"{t:8.2f}" for t in times[name])
        frames = "/".join(str(c) for c in sorted(counts[name]))
        print(f"{label:<28}{frames:>7}{cells}{best[name]:8.2f}{min(cpus[name]):10.2f}")
    print(f"cpu ratio video2dream / ffmpeg: {cpu_ratio:.3f} (for information)")
    verdict = "ok" if ratio <= args.max_ratio else "TOO SLOW"
    print(f"ratio video2dream / ffmpeg: {ratio:.3f} (limit {args.max_ratio:g}) {verdict}")
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
