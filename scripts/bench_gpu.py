"""GPU benchmark with FULL-SIZE random-weight models: they cost the same compute as the trained ones.

Builds (once, into --models, default <cache>/bench-models) from the published configs embedded in
scripts/configs/ (nothing is downloaded):
  sdxl-base/        SDXL base 1.0: UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
                    CLIPTextModelWithProjection, Euler scheduler, CLIP BPE tokenizers (real vocabulary)
  blip-large/       BlipForConditionalGeneration as Salesforce/blip-image-captioning-large
                    (stand-in vocabulary of the same size; random weights are nudged to end a caption
                    soon after min_length, as trained BLIP does, instead of running to max_length)
  vit-l-14.safetensors  open_clip ViT-L-14 (its built-in config), random weights
then times, through video2dream's own stages on a synthetic clip:
  generate     1024x1024, 30 steps, guidance 7, bf16 (auto), batch sizes --batches, PNGs included;
               and against the naive loop (pipe() + image.save() per frame) at batch 1
  interrogate  fast and best (BLIP large + ViT-L-14; the label cache's first build timed apart)
  run          end to end on a --e2e-seconds clip at 30 steps and at a 4-step preset
and prints a table against the issue's H100 targets. Each part can run alone (--parts), so that
each fits a 10-minute slot; the built models are reused between calls.

    python scripts/bench_gpu.py                         # everything, on cuda
    python scripts/bench_gpu.py --parts generate --frames 8
    python scripts/bench_gpu.py --tiny                  # the same logic, tiny models on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchlib import make_clip, offline_env, print_table, sync

CONFIGS = Path(__file__).resolve().parent / "configs"
PARTS = ("generate", "interrogate", "run")


# -- building the full-size models (GPU mode only) ------------------------------------------------

def _json(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def build_sdxl(dest: Path, device: str) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from video2dream.models.tiny_sdxl import save_sdxl

    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds, not minutes
        unet = UNet2DConditionModel.from_config(_json("sdxl-base-1.0_unet"))
        vae = AutoencoderKL.from_config(_json("sdxl-base-1.0_vae"))
        te = CLIPTextModel(CLIPTextConfig.from_dict(_json("sdxl-base-1.0_text_encoder")))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(_json("sdxl-base-1.0_text_encoder_2")))
    # fp16 as the hub's fp16 files; the painter casts to its dtype on load
    save_sdxl(dest, unet, vae, te, te2, dtype=torch.float16)


def build_blip_large(dest: Path, device: str) -> None:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    from video2dream.models.tiny import _blip_vocab

    config = BlipConfig.from_dict(_json("blip-image-captioning-large"))
    size = config.text_config.vocab_size  # 30524: bert-base-uncased's 30522 + [DEC] + [ENC]
    words = [t for t in _blip_vocab() if t not in ("[DEC]", "[ENC]")]
    vocab = words + [f"[unused{i}]" for i in range(size - 2 - len(words))] + ["[DEC]", "[ENC]"]
    ids = {t: i for i, t in enumerate(vocab)}
    config.text_config.bos_token_id = ids["[DEC]"]
    config.text_config.sep_token_id = config.text_config.eos_token_id = ids["[SEP]"]
    config.text_config.pad_token_id = ids["[PAD]"]
    torch.manual_seed(0)
    with torch.device(device):
        model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():  # as tiny:blip: words, never specials, and an end soon after min_length
        bias = model.text_decoder.cls.predictions.bias
        for tok in ("[PAD]", "[UNK]", "[CLS]", "[MASK]", "[DEC]", "[ENC]"):
            bias[ids[tok]] = -1e4
        bias[ids["[SEP]"]] = 5.0
    model.to(torch.float16).save_pretrained(dest)
    (dest / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(dest / "vocab.txt"), do_lower_case=True, bos_token="[DEC]",
                              additional_special_tokens=["[ENC]"], model_max_length=512)
    image_processor = BlipImageProcessor(size={"height": 384, "width": 384},
                                         image_mean=[0.48145466, 0.4578275, 0.40821073],
                                         image_std=[0.26862954, 0.26130258, 0.27577711],
                                         do_convert_rgb=True)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)


def build_vit_l14(dest: Path, device: str) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-L-14", device=device)  # built-in config, no weights
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(dest))


def full_models(folder: Path, device: str) -> dict[str, str]:
    """Build what is missing (each atomically: aside, then renamed); the ids the settings take."""
    parts = {"sdxl-base": build_sdxl, "blip-large": build_blip_large,
             "vit-l-14.safetensors": build_vit_l14}
    folder.mkdir(parents=True, exist_ok=True)
    for name, build in parts.items():
        dest = folder / name
        if dest.exists():
            continue
        t0 = time.perf_counter()
        work = folder / f"{name}.tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        if not name.endswith(".safetensors"):
            work.mkdir()
        build(work, device)
        os.replace(work, dest)
        print(f"built {dest} in {time.perf_counter() - t0:.1f} s", flush=True)
    return {"model": str(folder / "sdxl-base"), "caption_model": str(folder / "blip-large"),
            "clip_model": f"ViT-L-14/{folder / 'vit-l-14.safetensors'}"}


# -- the measurements -----------------------------------------------------------------------------

def prepared_run(work: Path, frames: int, settings):
    """A run folder with frames and prompts.csv (fast mode): what generate needs."""
    from video2dream.runfolder import RunFolder
    from video2dream.settings import replace_section
    from video2dream.stages.extract import extract
    from video2dream.stages.interrogate import interrogate

    work.mkdir(parents=True, exist_ok=True)
    run = RunFolder(work / "run")
    extract(run, make_clip(work / "clip.mp4", frames), settings)
    interrogate(run, replace_section(settings, "interrogate", mode="fast"))
    return run


def bench_generate(work: Path, settings, frames: int, batches: list[int], rows: list) -> None:
    from video2dream.models.cache import ModelCache
    from video2dream.settings import replace_section
    from video2dream.stages.generate import generate, plan

    run = prepared_run(work, frames, settings)
    g = settings.generate
    models = ModelCache()
    t0 = time.perf_counter()
    painter = models.painter(settings)
    load = time.perf_counter() - t0
    what = f"{g.width}x{g.height}, {g.steps} steps, guidance {g.guidance}, {painter.dtype}"
    for batch in batches:
        s = replace_section(settings, "generate", batch_size=batch)
        generate(run, s, force=True, models=models)  # warm-up (kernels, allocator, compile)
        sync()
        t0 = time.perf_counter()
        generate(run, s, force=True, models=models)
        sync()
        sec = (time.perf_counter() - t0) / frames
        rows.append([f"generate stage, batch {batch}", what, sec, "<= 1.3 s/frame (H100)"])
    # The naive loop on the same loaded pipeline: one call per frame, PNG saved in the loop.
    import torch

    jobs, (w, h) = plan(run, settings)
    out = run.root / "naive"
    out.mkdir(exist_ok=True)
    sync()
    t0 = time.perf_counter()
    for j in jobs:
        image = painter.pipe(j.prompt, negative_prompt=j.negative_prompt, width=w, height=h,
                             num_inference_steps=g.steps, guidance_scale=g.guidance,
                             generator=torch.Generator("cpu").manual_seed(j.seed)).images[0]
        image.save(out / j.name)
    sync()
    rows.append(["naive loop (pipe + save per frame)", what, (time.perf_counter() - t0) / frames, ""])
    rows.append(["  (SDXL load, once)", "", load, ""])
    models.clear()


def bench_interrogate(work: Path, settings, frames: int, rows: list) -> None:
    from video2dream.models.cache import ModelCache
    from video2dream.runfolder import RunFolder
    from video2dream.settings import replace_section
    from video2dream.stages.extract import extract
    from video2dream.stages.interrogate import interrogate

    work.mkdir(parents=True, exist_ok=True)
    run = RunFolder(work / "run-i")
    extract(run, make_clip(work / "clip-i.mp4", frames), settings)
    models = ModelCache()
    t0 = time.perf_counter()
    models.captioner(settings)
    sync()
    t1 = time.perf_counter()
    models.interrogator(settings)  # the first start builds (or reads) the label-embedding cache
    sync()
    t2 = time.perf_counter()
    i = settings.interrogate
    for mode, target in (("fast", "<= 0.15 s/frame (H100)"), ("best", "<= 2 s/frame (H100)")):
        s = replace_section(settings, "interrogate", mode=mode)
        interrogate(run, s, force=True, models=models)  # warm-up
        sync()
        t = time.perf_counter()
        interrogate(run, s, force=True, models=models)
        sync()
        rows.append([f"interrogate stage, {mode}", f"batch {i.batch_size}, {frames} frames",
                     (time.perf_counter() - t) / frames, target])
    rows.append(["  (BLIP load; CLIP + label tables, once)", "", f"{t1 - t0:.2f}; {t2 - t1:.2f}", ""])
    models.clear()


def bench_run(work: Path, settings, seconds: float, label: str, target: str, rows: list) -> None:
    """`run` end to end through the library (as the CLI does: the same steps), a fresh run folder."""

    from video2dream import pipeline
    from video2dream.runfolder import RunFolder

    work.mkdir(parents=True, exist_ok=True)
    clip = make_clip(work / "e2e.mp4", seconds, "1280x720", audio=True)
    run = RunFolder(work / "e2e")
    sync()
    t0 = time.perf_counter()
    pipeline.do_run(run, settings, clip)  # the library takes the run folder's lock
    sync()
    total = time.perf_counter() - t0
    frames = len(list(run.frames_dir.glob("*.png")))
    g = settings.generate
    rows.append([f"run end to end, {label}", f"{frames} frames, {g.steps} steps, guidance {g.guidance}, "
                 f"{settings.interrogate.mode} mode, batch {g.batch_size}",
                 f"{total:.1f} s ({total / frames:.3f}/frame)", target])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU: tests this script's logic")
    ap.add_argument("--parts", default=",".join(PARTS), help="generate,interrogate,run")
    ap.add_argument("--models", type=Path, default=None, help="where the full-size models are built")
    ap.add_argument("--frames", type=int, default=None, help="frames for generate and interrogate")
    ap.add_argument("--batches", default=None, help="generate batch sizes, e.g. 1,2,4")
    ap.add_argument("--size", type=int, default=None, help="generate width and height")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--e2e-seconds", type=float, default=None, help="clip length for `run` (1 fps)")
    ap.add_argument("--compile", action="store_true", help="generate with torch.compile on the UNet")
    args = ap.parse_args()
    offline_env()
    from video2dream.models import hub
    from video2dream.settings import resolve

    parts = [p for p in args.parts.split(",") if p]
    if args.tiny:
        ids = {"model": "tiny:sdxl", "caption_model": "tiny:blip", "clip_model": "tiny:clip"}
        device, size, steps, frames, batches, e2e = "cpu", 128, 2, 2, "1,2", 2
    else:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: run with --tiny to test the logic on the CPU", file=sys.stderr)
            return 2
        device, size, steps, frames, batches, e2e = "cuda", 1024, 30, 8, "1,2,4", 180
        t0 = time.perf_counter()
        ids = full_models(args.models or hub.cache_dir() / "bench-models", device)
        print(f"full-size models ready in {time.perf_counter() - t0:.1f} s", flush=True)
    size, steps = args.size or size, args.steps or steps
    frames, e2e = args.frames or frames, args.e2e_seconds or e2e
    batch_sizes = [int(b) for b in (args.batches or batches).split(",")]
    over = {"device": device,
            "interrogate": {"caption_model": ids["caption_model"], "clip_model": ids["clip_model"]},
            "generate": {"model": ids["model"], "width": size, "height": size, "steps": steps,
                         "guidance": 7.0, "batch_size": max(batch_sizes), "compile": args.compile}}
    settings = resolve(preset="tiny" if args.tiny else "default", overrides=over)
    if args.tiny:
        settings.generate.pixels = size * size
    rows: list = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "generate" in parts:
            bench_generate(work / "g", settings, frames, batch_sizes, rows)
        if "interrogate" in parts:
            bench_interrogate(work / "i", settings, frames, rows)
        if "run" in parts:
            # The default preset (~1 MP, 30 steps, guidance 7) and the 4-step turbo preset (512x512,
            # guidance 0, Euler a: sdxl-turbo is SDXL's UNet, so our SDXL stands in for it).
            models = {"model": ids["model"], "compile": args.compile}
            for preset, label, target in (("default", "default preset", "<= 5 min for 180 frames (H100)"),
                                          ("turbo", "4-step turbo preset", "<= 1 min for 180 frames (H100)")):
                e2e_over = {"device": device, "interrogate": over["interrogate"],
                            "generate": dict(models, batch_size=max(batch_sizes))}
                if args.tiny:
                    e2e_over["generate"]["steps"] = 4 if preset == "turbo" else steps
                e2e_settings = resolve(preset="tiny" if args.tiny else preset, overrides=e2e_over)
                bench_run(work / f"r-{preset}", e2e_settings, e2e, label, target, rows)
    import torch

    gpu = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} threads)"
    print(f"bench_gpu: {'tiny' if args.tiny else 'full-size random-weight'} models on {gpu}")
    print_table("", ["what", "settings", "s/frame", "target"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
