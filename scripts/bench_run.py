"""End to end: `video2dream run` on a synthetic clip, seconds per stage, per frame, and in total.

The command line runs in this process (`video2dream run CLIP -o RUN --preset P ...`), unchanged;
the script only wraps each stage's entry point with a timer and counts the model loads made while
the stage runs (diffusers and transformers `from_pretrained`, open_clip's factory): each model must
load once per stage, never per frame. Exits non-zero if any model loads more than once in a stage.

    python scripts/bench_run.py                          # tiny preset, CPU, 10-second clip
    python scripts/bench_run.py --seconds 180 --preset default --device cuda
    python scripts/bench_run.py --seconds 180 --preset turbo --device cuda
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchlib import count_loads, make_clip, offline_env, print_table, sync

STAGES = ("extract", "interrogate", "generate", "assemble")


def timed_run(argv: list[str]) -> tuple[dict[str, float], dict[str, dict[str, int]], float]:
    """(seconds per stage, loads per stage {class: count}, total seconds) of one in-process run."""
    from video2dream import cli, pipeline

    seconds: dict[str, float] = {}
    loads: dict[str, dict[str, int]] = {}
    originals = {s: getattr(pipeline, f"do_{s}") for s in STAGES}

    def wrap(stage: str):
        def stage_fn(run, settings, *args, **kwargs):
            with count_loads() as counts:
                sync()
                t0 = time.perf_counter()
                try:
                    return originals[stage](run, settings, *args, **kwargs)
                finally:
                    sync()
                    seconds[stage] = time.perf_counter() - t0
                    loads[stage] = dict(counts)
        return stage_fn

    for s in STAGES:  # do_run looks its steps up by name when it runs
        setattr(pipeline, f"do_{s}", wrap(s))
    t0 = time.perf_counter()
    import diffusers  # noqa: F401  (count_loads imports these: time them on their own line)
    import open_clip  # noqa: F401
    import transformers  # noqa: F401

    seconds["imports"] = time.perf_counter() - t0
    try:
        cli.main(argv)
    except SystemExit as e:
        if e.code:
            raise SystemExit(f"video2dream run failed (exit {e.code})") from None
    finally:
        for s in STAGES:
            setattr(pipeline, f"do_{s}", originals[s])
    return seconds, loads, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10, help="clip length (1 frame per second)")
    ap.add_argument("--size", default="640x360", help="the clip's WxH")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default=None)
    ap.add_argument("extra", nargs="*", help="more `run` flags after --, e.g. -- --steps 4 --mode best")
    args = ap.parse_args()
    offline_env()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = make_clip(work / "clip.mp4", args.seconds, args.size, audio=True)
        argv = ["run", str(clip), "-o", str(work / "run"), "--preset", args.preset, *args.extra]
        if args.device:
            argv += ["--device", args.device]
        seconds, loads, total = timed_run(argv)
        frames = len(list((work / "run" / "frames").glob("*.png")))
    rows = []
    twice = []
    for s in STAGES:
        counted = loads.get(s, {})
        twice += [f"{s}: {k} x{v}" for k, v in counted.items() if v > 1]
        what = f"{len(counted)} models, each x{max(counted.values())}" if counted else "-"
        rows.append([s, seconds.get(s, 0.0), seconds.get(s, 0.0) / max(frames, 1), what])
    rows.insert(0, ["imports (torch, diffusers, transformers, open_clip)", seconds["imports"],
                    seconds["imports"] / max(frames, 1), ""])
    rows.append(["total (whole `run` command)", total, total / max(frames, 1), ""])
    print(f"run: {args.seconds:g} s {args.size} clip -> {frames} frames, preset {args.preset}, "
          f"flags {' '.join(args.extra) or '-'}, threads {os.cpu_count()}")
    print_table("", ["stage", "seconds", "s/frame", "model loads in the stage"], rows)
    for s in STAGES:
        if loads.get(s):
            print(f"  {s} loaded: " + ", ".join(f"{k} x{v}" for k, v in sorted(loads[s].items())))
    if twice:
        print("FAIL: models loaded more than once in a stage: " + "; ".join(twice))
        return 1
    print("every model loaded once per stage")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
