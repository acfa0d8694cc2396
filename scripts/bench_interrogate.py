"""Benchmark the interrogate stage against clip-interrogator's own per-image calls, in the same run.

naive:  per frame, a BLIP caption of that one frame (the same captioner and caption settings), then
        the package's `Interrogator.interrogate_fast / interrogate_classic / interrogate /
        interrogate_negative` on that frame, with the package's own ranking. It is handed the very
        models the stage uses (the same loaded CLIP, BLIP and label tables): only the calls differ.
ours:   `video2dream interrogate`'s stage function with the same models passed in (a ModelCache
        filled beforehand): batched captions, one CLIP image forward per batch, exact batched ranking.

Both print seconds per frame (model loading excluded: it is timed once, on its own line), and the
prompts of both are compared frame by frame. Where they are expected to be identical and are not,
the script exits non-zero:
  classic, fast   identical (our exact top-k equals the package's chunked one for these counts);
  best            may differ: the package's chunked ranking of flavor_intermediate_count labels is
                  approximate, and its best mode scores a classic prompt of 32 flavors, not 3;
  negative        may differ: the package's last ranking pass ignores `reverse`.

Then the label-embedding cache: a first start in a fresh, empty cache folder (every label encoded
with CLIP's text tower) against a second start that reads the cache (target: at least 5x faster).

    python scripts/bench_interrogate.py                         # tiny preset, CPU, 8 frames
    python scripts/bench_interrogate.py --frames 4 --modes fast,classic
    python scripts/bench_interrogate.py --preset default --device cuda   # models in the HF cache
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchlib import make_clip, offline_env, print_table, sync, timer

from video2dream.runfolder import RunFolder
from video2dream.settings import replace_section, resolve
from video2dream.stages.extract import extract
from video2dream.stages.interrogate import interrogate, read_prompts

MODES = ("fast", "classic", "best", "negative")
EXPECT_SAME = {"fast", "classic"}


def package_call(ci, mode: str, image, caption: str) -> tuple[str, str]:
    """(prompt, negative prompt) from the package's own method for one image."""
    if mode == "fast":
        return ci.interrogate_fast(image, caption=caption), ""
    if mode == "classic":
        return ci.interrogate_classic(image, caption=caption), ""
    if mode == "best":
        return ci.interrogate(image, caption=caption), ""
    return caption, ci.interrogate_negative(image)


def naive(run: RunFolder, settings, models, mode: str) -> tuple[float, dict[str, tuple[str, str, str]]]:
    """Per frame: caption it alone, then the package's method. (seconds, name -> (caption, p, n))."""
    from PIL import Image

    from video2dream.models.interrogator import _quiet_autocast
    from video2dream.tables import read_frames

    i = settings.interrogate
    captioner = models.captioner(settings)
    ci = models.interrogator(settings).ci
    names = read_frames(run.frames_csv)["filename"].tolist()
    out = {}
    sync()
    t0 = time.perf_counter()
    with _quiet_autocast():
        for name in names:
            with Image.open(run.frames_dir / name) as im:
                image = im.convert("RGB")
            caption = captioner.caption([image], min_length=i.min_length, max_length=i.max_length,
                                        num_beams=i.num_beams,
                                        no_repeat_ngram_size=i.no_repeat_ngram_size)[0]
            out[name] = (caption, *package_call(ci, mode, image, caption))
    sync()
    return time.perf_counter() - t0, out


def ours(run: RunFolder, settings, models) -> tuple[float, dict[str, tuple[str, str, str]]]:
    sync()
    t0 = time.perf_counter()
    interrogate(run, settings, force=True, models=models)
    sync()
    seconds = time.perf_counter() - t0
    df = read_prompts(run)
    return seconds, {r.filename: (r.caption, r.prompt, r.negative_prompt) for r in df.itertuples()}


def chains(run: RunFolder, settings, models, captions: dict[str, str]) -> list[list]:
    """The chain alone, on the same inputs: the package's `chain` vs ours (shared prefix encoded
    once). Both must give the same prompt; rows: [chain, package s, ours s, speed-up, same]."""
    import torch
    from PIL import Image

    from video2dream.models.interrogator import MAX_FLAVORS, MIN_FLAVORS, _quiet_autocast

    it = models.interrogator(settings)
    ci = it.ci
    totals = {"best": [0.0, 0.0, 0], "negative": [0.0, 0.0, 0]}
    with _quiet_autocast(), torch.inference_mode():
        for name, caption in captions.items():
            with Image.open(run.frames_dir / name) as im:
                feature = it._encode_images([im.convert("RGB")])
            sim = ci.similarity(feature, caption)
            ranked = it._rank(feature, it._MERGED, it.flavor_intermediate_count)[0]
            least = it._rank(feature, ("flavors",), it.flavor_intermediate_count, reverse=True)[0]
            calls = {"best": (dict(phrases=ranked, best_prompt=caption, best_sim=sim,
                                   min_count=MIN_FLAVORS, max_count=MAX_FLAVORS)),
                     "negative": dict(phrases=least + ci.negative.labels, max_count=MAX_FLAVORS,
                                      reverse=True)}
            for chain, kwargs in calls.items():
                sync()
                t0 = time.perf_counter()
                theirs = ci.chain(feature, **kwargs)
                sync()
                t1 = time.perf_counter()
                ours = it.chain(feature, **kwargs)
                sync()
                totals[chain][0] += t1 - t0
                totals[chain][1] += time.perf_counter() - t1
                totals[chain][2] += theirs == ours
    n = len(captions)
    return [[f"{c} chain", f"{a / n:.3f}", f"{b / n:.3f}", f"{a / b:.2f}x", f"{same}/{n}"]
            for c, (a, b, same) in totals.items()]


def cache_starts(settings, models, folder: Path) -> tuple[float, float]:
    """Seconds to build an Interrogator in an empty cache folder, then again with the cache filled."""
    from video2dream.models.interrogator import Interrogator

    i = settings.interrogate
    captioner = models.captioner(settings)
    times = []
    for _ in range(2):
        sync()
        t0 = time.perf_counter()
        Interrogator(i.clip_model, captioner, settings.device, settings.dtype, chunk_size=i.chunk_size,
                     flavor_intermediate_count=i.flavor_intermediate_count, cache=folder)
        sync()
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--frames", type=int, default=8, help="frames (one per second of a synthetic clip)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: fast,classic,best,negative")
    ap.add_argument("--batch-size", type=int, default=None, help="the stage's frames per batch")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--no-cache-bench", action="store_true", help="skip the first-vs-cached start")
    ap.add_argument("--no-chain-bench", action="store_true",
                    help="skip timing the package's chain against ours on the same inputs")
    args = ap.parse_args()
    offline_env()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode(s) {', '.join(bad)}")
    over: dict = {"interrogate": {}}
    if args.batch_size:
        over["interrogate"]["batch_size"] = args.batch_size
    if args.device:
        over["device"] = args.device
    if args.dtype:
        over["dtype"] = args.dtype
    base = resolve(preset=args.preset, overrides=over)

    from video2dream.models.cache import ModelCache

    rows, mismatches, loads = [], [], {}
    models = ModelCache()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = RunFolder(work / "run")
        extract(run, make_clip(work / "clip.mp4", args.frames), base)
        n = len(list(run.frames_dir.glob("*.png")))
        with timer(loads, "caption model"):
            models.captioner(base)
        with timer(loads, "CLIP + label tables"):
            models.interrogator(base)
        for mode in modes:
            settings = replace_section(base, "interrogate", mode=mode)
            ours(run, settings, models)  # warm-up: first calls allocate and pick kernels
            our_s, our_out = ours(run, settings, models)
            naive_s, naive_out = naive(run, settings, models, mode)
            same_caption = sum(our_out[k][0] == naive_out[k][0] for k in our_out)
            same = sum(our_out[k][1:] == naive_out[k][1:] for k in our_out)
            rows.append([mode, f"{naive_s / n:.3f}", f"{our_s / n:.3f}", f"{naive_s / our_s:.2f}x",
                         f"{same_caption}/{n}", f"{same}/{n}"])
            if mode in EXPECT_SAME and same != n:
                mismatches.append(mode)
                for k in our_out:
                    if our_out[k][1:] != naive_out[k][1:]:
                        print(f"[{mode}] {k}\n  ours:    {our_out[k][1:]}\n  package: {naive_out[k][1:]}")
                        break
        chain_rows = []
        if not args.no_chain_bench and {"best", "negative"} & set(modes):
            chain_rows = chains(run, base, models, {k: v[0] for k, v in our_out.items()})
            mismatches += [r[0] for r in chain_rows if not r[4].startswith(f"{n}/")]
        if not args.no_cache_bench:
            cache = work / "label-cache"
            first, second = cache_starts(base, models, cache)
        models.clear()

    i = base.interrogate
    print(f"interrogate: {n} frames, preset {args.preset}, caption {i.caption_model}, clip {i.clip_model}, "
          f"device {base.device}, batch {i.batch_size}, threads {os.cpu_count()}")
    print(f"model loading (once, not in the rows below): caption {loads['caption model']:.2f} s, "
          f"CLIP + label tables {loads['CLIP + label tables']:.2f} s")
    print_table("", ["mode", "package per image s/frame", "our stage s/frame", "speed-up",
                     "same caption", "same prompts"], rows)
    print("same prompts: expected for fast and classic; best and negative may differ (see --help)")
    if chain_rows:
        print_table("\nthe greedy chain alone, same inputs (our ranking), per frame:",
                    ["chain", "package chain s", "our chain s", "speed-up", "same prompt"], chain_rows)
    if not args.no_cache_bench:
        ratio = first / second if second else float("inf")
        print(f"label-embedding cache: first start (empty cache) {first:.2f} s, second start "
              f"(cached) {second:.2f} s: {ratio:.1f}x faster (target >= 5x)")
    if mismatches:
        print(f"FAIL: prompts differ from the package's in {', '.join(mismatches)}")
        return 1
    if not args.no_cache_bench and ratio < 5:
        print("FAIL: the cached start is less than 5x faster")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
