"""Never pay twice, under kills: SIGKILL `video2dream run CLIP --backend replicate --preset tiny` at
random moments against the fake Replicate server (tests/fake_replicate.py, started here on 127.0.0.1
with latency on every create), rerun it until it finishes, and count the predictions the server
created per unit. A unit (a frame's caption or dream) created more than once was paid twice.

Each round is a fresh run folder and a fresh server state: the command is killed at a random moment
(uniform between 0 and 1.5 times an unkilled run's duration), run again, killed again, ... until a
run finishes; then the next round, until --kills kills were made.

    python scripts/kill_replicate.py [--kills 30] [--latency 0.4] [--seconds 6] [--seed 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_replicate import FakeReplicate, Server  # noqa: E402

from video2dream.media import ffmpeg_path  # noqa: E402


def make_clip(path: Path, seconds: int) -> Path:
    subprocess.run([ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=160x120:rate=10:duration={seconds}", "-pix_fmt", "yuv420p", str(path)],
                   check=True)
    return path


def start(clip: Path, run: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "video2dream", "run", str(clip), "-o", str(run), "--preset", "tiny",
                             "--backend", "replicate"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def run_once(clip: Path, run: Path, env: dict[str, str], kill_after: float | None) -> tuple[bool, str]:
    """One command; killed after kill_after seconds unless it ended first. (killed, its stderr)."""
    proc = start(clip, run, env)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True, ""
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"kill_replicate: a run failed (exit {proc.returncode}):\n{err}")
    return False, err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs in all (default 30)")
    parser.add_argument("--latency", type=float, default=0.4, help="seconds a create takes on the network (0.4)")
    parser.add_argument("--seconds", type=int, default=6, help="the clip's length: one frame a second (6)")
    parser.add_argument("--seed", type=int, default=1, help="for the kill moments (1)")
    parser.add_argument("--work", type=Path,
                        help="a folder for the clip and the run folders (default: a new temporary one)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-replicate-"))
    work.mkdir(parents=True, exist_ok=True)
    clip = make_clip(work / "clip.mp4", args.seconds)
    server = Server(FakeReplicate(latency=args.latency))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", REPLICATE_BASE_URL=server.url,
               REPLICATE_API_TOKEN=server.fake.token, REPLICATE_POLL_INTERVAL="0.05")
    try:
        began = time.perf_counter()
        run_once(clip, work / "baseline", env, None)
        duration = time.perf_counter() - began
        created = sum(server.fake.created.values())
        print(f"an unkilled run: {duration:.1f} s, {created} predictions")
        kills = rounds = total = twice = 0
        while kills < args.kills:
            rounds += 1
            fake = server.reset()
            fake.latency = args.latency
            run = work / f"round{rounds:03d}"
            while True:
                killed, _ = run_once(clip, run, env, rng.uniform(0, 1.5 * duration) if kills < args.kills else None)
                kills += killed
                if not killed:
                    break
            paid = Counter({unit: n for unit, n in fake.created.items() if n > 1})
            total += sum(fake.created.values())
            twice += sum(n - 1 for n in paid.values())
            dreams = len(list((run / "dreams").glob("*.png")))
            print(f"round {rounds}: {sum(fake.created.values())} predictions for {len(fake.created)} units, "
                  f"{dreams} dreams, {'dream.mp4' if (run / 'dream.mp4').is_file() else 'NO dream.mp4'}, "
                  f"paid twice: {sum(n - 1 for n in paid.values())} (kills so far: {kills})")
            for (kind, what), n in paid.items():
                print(f"  {kind} {what[:60]}: created {n} times")
    finally:
        server.stop()
    print(f"{args.kills} kills in {rounds} rounds, latency {args.latency} s on creates: {total} predictions created, "
          f"{twice} paid twice")
    return 1 if twice else 0


if __name__ == "__main__":
    sys.exit(main())
