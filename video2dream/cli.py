"""The command line: parsing and friendly errors only; every command calls one library function."""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import shlex
import shutil
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import Interrupted, UserError, debug_enabled
from .progress import say
from .runfolder import RunFolder
from .settings import CHOICES, RANGES, Settings, preset_names, resolve, workers_value

# (flags, settings path, type, help); type "flag" is an on/off switch (--X and --no-X).
Option = tuple[tuple[str, ...], str, Any, str]


class _Clear:
    """A flag's value that sets its setting back to none (`--strength none`, `--width auto`)."""

    def __repr__(self) -> str:
        return "none"


CLEAR = _Clear()


def _or_none(kind: type, words: tuple[str, ...] = ("none",)) -> Callable[[str], Any]:
    """kind, or CLEAR for one of words: the way back to a setting's automatic value."""
    def convert(text: str) -> Any:
        return CLEAR if text.strip().lower() in words else kind(text)

    convert.__name__ = kind.__name__  # argparse names it in "invalid float value: 'x'"
    return convert

EXTRACT: list[Option] = [
    (("--fps",), "extract.fps", float, "frames per second of source time (default 1)"),
    (("--start",), "extract.start", _or_none(float), "first second of the source to use (default 0)"),
    (("--end",), "extract.end", _or_none(float), "last second of the source to use (default, or none: the end)"),
]
# Keyframe timing: extract and run only (a telephone game on a video keeps the 1/fps clock).
TIMING: list[Option] = [
    (("--at",), "extract.at", str,
     "seconds (default: a keyframe every 1/fps s) or beats (on the soundtrack's beats)"),
    (("--every",), "extract.every", int, "with --at beats: a keyframe on every Nth beat (default 1)"),
    (("--scene-cuts",), "extract.scene_cuts", "flag",
     "also a keyframe at every shot cut (PySceneDetect); --no-scene-cuts: not (default)"),
]
INTERROGATE: list[Option] = [
    (("--mode",), "interrogate.mode", str, "best, classic, fast, negative or caption (default fast)"),
    (("--caption-model",), "interrogate.caption_model", str, "BLIP model id or folder"),
    (("--clip-model",), "interrogate.clip_model", str, "open_clip NAME/PRETRAINED, e.g. ViT-L-14/openai"),
    (("--min-length",), "interrogate.min_length", int, "shortest caption in tokens (default 30)"),
    (("--max-length",), "interrogate.max_length", int, "longest caption in tokens (default 100)"),
    (("--num-beams",), "interrogate.num_beams", int, "beam search width (default 5)"),
    (("--no-repeat-ngram-size",), "interrogate.no_repeat_ngram_size", int,
     "forbid repeating n-grams of this size (default 2)"),
]
INTERROGATE_BATCH: Option = (("--batch-size",), "interrogate.batch_size", int, "frames per caption batch (default 4)")
# The look of every dream (styles.py; styles.csv in the run folder styles ranges and shots).
DIRECTING: list[Option] = [
    (("--style",), "generate.style", str,
     "the look of every dream: a template with {prompt} for the row's words, or text appended (none: off)"),
    (("--negative-style",), "generate.negative_style", str,
     "the same for every negative prompt: a template with {prompt}, or text appended (none: off)"),
    (("--style-image",), "generate.style_image", str,
     "an image whose look every dream takes (IP-Adapter; none: off)"),
    (("--style-image-scale",), "generate.style_image_scale", float, "the style image's weight, 0-2 (default 0.6)"),
    (("--ip-adapter",), "generate.ip_adapter", str,
     "the IP-Adapter's id or folder of --style-image (default h94/IP-Adapter)"),
]
GENERATE: list[Option] = [
    (("--model",), "generate.model", str, "SDXL model id or folder"),
    (("--steps",), "generate.steps", int, "denoising steps (default 30)"),
    (("--guidance",), "generate.guidance", float, "classifier-free guidance scale (default 7)"),
    (("--scheduler",), "generate.scheduler", str,
     "diffusers scheduler class, e.g. EulerAncestralDiscreteScheduler (default: the model's own)"),
    (("--negative-prompt",), "generate.negative_prompt", str, "added to every frame's negative prompt"),
    (("--seed",), "generate.seed", int, "base seed (default 0)"),
    (("--seed-mode",), "generate.seed_mode", str, "per-frame (seed + frame number) or fixed"),
    (("--color-coherence",), "generate.color_coherence", str,
     "lab: match each dream's LAB colour mean and std to its frame's (less flicker); none: off (default)"),
    (("--strength",), "generate.strength", _or_none(float),
     "img2img from the source frame with this strength (0-1]; 0 or none: text to image (default)"),
    (("--width",), "generate.width", _or_none(int, ("none", "auto")),
     "dream width (default, or 0 or auto: source aspect at ~1 MP)"),
    (("--height",), "generate.height", _or_none(int, ("none", "auto")), "dream height (0 or auto: automatic)"),
    (("--lora",), "generate.lora", str, "LoRA weights: ID_OR_PATH[:SCALE] (none: no LoRA)"),
    (("--vae",), "generate.vae", str,
     "a replacement VAE id or folder (e.g. madebyollin/sdxl-vae-fp16-fix; none: the model's own)"),
    (("--preview-vae",), "generate.preview_vae", str,
     "a tiny AutoencoderTiny VAE for fast previews (e.g. madebyollin/taesdxl; softer pictures; none: off)"),
    (("--compile",), "generate.compile", "flag",
     "torch.compile the UNet (pays off on a GPU for long runs); --no-compile: off (default)"),
    (("--refiner",), "generate.refiner", str,
     "an SDXL refiner that finishes each dream (stabilityai/stable-diffusion-xl-refiner-1.0; none: off, default)"),
    (("--refiner-switch",), "generate.refiner_switch", float,
     "the part of the denoising the base does before the refiner takes over (default 0.8)"),
    (("--prompt-weighting",), "generate.prompt_weighting", str,
     "a1111: prompts read whole (75-token chunks) with (word:1.3) weights; none: cut at 77 tokens (default)"),
    (("--controlnet",), "generate.controlnet", str,
     "keep the source's composition: canny, depth, or [canny:|depth:]ID_OR_PATH of an SDXL ControlNet "
     "(none: off, default)"),
    (("--control-scale",), "generate.control_scale", float, "the ControlNet's weight, 0-2 (default 0.5)"),
    (("--depth-model",), "generate.depth_model", str,
     "the depth estimator of --controlnet depth (default Intel/dpt-hybrid-midas)"),
    *DIRECTING,
]
GENERATE_BATCH: Option = (("--batch-size",), "generate.batch_size", int, "frames per pipeline call (default 1)")
ASSEMBLE: list[Option] = [
    (("--from",), "assemble.source", str, "dreams (default) or frames"),
    (("--audio",), "assemble.audio", str, "auto (the source's sound), none, or a PATH to take sound from"),
    (("--transition",), "assemble.transition", str,
     "cut (default), crossfade, flow (motion-interpolated) or morph (the in-betweens of `video2dream morph`)"),
    (("--side-by-side",), "assemble.side_by_side", "flag",
     "also write NAME_side_by_side.mp4: frames | dreams; --no-side-by-side: not (default)"),
    (("--out-fps",), "assemble.out_fps", float, "frame rate of the mp4 (default 30)"),
    (("--crf",), "assemble.crf", int, "x264 quality, lower is better (default 18)"),
]
MORPH: list[Option] = [
    (("--inbetweens",), "morph.inbetweens", _or_none(int, ("none", "auto")),
     "in-betweens per gap between two dreams (default, or auto: as many as --out-fps needs)"),
    (("--pacing",), "morph.pacing", str,
     "linear (evenly spaced, default) or audio (spaced by the soundtrack's onsets: moves on the beat)"),
]
TELEPHONE: list[Option] = [
    (("--steps",), "telephone.steps", int,
     "how many times the picture goes round (default 10); for a video, rounds over every frame"),
    (("--mode",), "telephone.mode", str,
     "caption (default: the BLIP caption alone, as the original game), fast, classic, best or negative"),
    (("--hold",), "telephone.hold", float, "seconds each step is shown in chain.mp4 (default 1)"),
    (("--crossfade",), "telephone.crossfade", float,
     "seconds at the end of each hold spent fading into the next step (default 0: cuts)"),
    (("--strip-height",), "telephone.strip_height", int, "height of each picture in chain_strip.png (default 256)"),
]
# The chain's --steps is its length: SDXL's denoising steps are --steps-per-image here.
_TELEPHONE_HELP = {
    "generate.steps": (("--steps-per-image",), "SDXL denoising steps per picture (default 30)"),
    "generate.seed": (("--seed",), "base seed: step K paints with seed + K (default 0)"),
    "generate.seed_mode": (("--seed-mode",), "per-frame (seed + step; a video: + frame number) or fixed"),
    "generate.strength": (("--strength",), "img2img from the previous step's picture with this strength (0-1]; "
                          "0 or none: text to image (default)"),
    "generate.negative_prompt": (("--negative-prompt",), "added to every step's negative prompt"),
}
TELEPHONE_GENERATE: list[Option] = [
    (*_TELEPHONE_HELP[path][:1], path, kind, _TELEPHONE_HELP[path][1]) if path in _TELEPHONE_HELP
    else (flags, path, kind, text)
    for flags, path, kind, text in GENERATE
    if path != "generate.color_coherence"  # a chain's step has no source frame to match
    and (flags, path, kind, text) not in DIRECTING  # the chain paints its captions as they are
]
MODELS: list[Option] = [
    (("--device",), "device", str, "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"),
    (("--dtype",), "dtype", str, "auto (fp16/bf16 on GPU, fp32 on CPU), fp32, fp16, bf16"),
    (("--backend",), "backend", str,
     "where the models run: local (default: this process), ray (several GPUs or machines) or replicate "
     "(Replicate's API; REPLICATE_API_TOKEN)"),
    (("--workers",), "workers", workers_value,
     "parallel workers of the backend (default: its own choice; ray: one per GPU; replicate: 4); ray also "
     "takes a range, e.g. 2-8: an autoscaling pool"),
    (("--ray-address",), "ray_address", str,
     "the Ray cluster of --backend ray, e.g. HEAD:6379 (default: RAY_ADDRESS, else a local Ray instance)"),
    (("--max-predictions",), "replicate.max_predictions", int,
     "--backend replicate: refuse a command that would create more predictions than this (default: no limit)"),
    (("--prediction-timeout",), "replicate.timeout", float,
     "--backend replicate: seconds one prediction may take before it is canceled (default 600)"),
]

EXAMPLES = {
    "extract": "video2dream extract clip.mp4 -o runs/clip --fps 2 --start 10 --end 40",
    "interrogate": "video2dream interrogate runs/clip --mode fast --min-length 40 --num-beams 2",
    "generate": "video2dream generate runs/clip --steps 30 --seed 7 --strength 0.6",
    "morph": "video2dream morph runs/clip --inbetweens 7 --pacing audio",
    "assemble": "video2dream assemble runs/clip --transition crossfade --side-by-side",
    "mux-audio": "video2dream mux-audio runs/clip song.wav",
    "status": "video2dream status runs/clip",
    "pick": "video2dream pick runs/clip 12 3",
    "run": "video2dream run clip.mp4 -o runs/clip --preset tiny",
    "telephone": "video2dream telephone cover.jpg -o runs/cover --steps 12 --stop-at-fixed-point",
    "studio": "video2dream studio runs/clip --open",
}


def _add_options(parser: argparse.ArgumentParser, options: list[Option]) -> None:
    ranges = {path: what for path, _, what in RANGES}
    for flags, path, kind, text in options:
        dest = "set:" + path
        if kind == "flag":
            parser.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        # the allowed values in the option's own line: {cut,crossfade,...}, or the range after the text
        metavar = flags[0].lstrip("-").replace("-", "_").upper()
        if path in CHOICES:
            metavar = "{" + ",".join(CHOICES[path]) + "}"
        if path in ranges:
            text = f"{text}; {ranges[path]}"
        parser.add_argument(*flags, dest=dest, type=kind, default=None, help=text, metavar=metavar)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", action="append", metavar="NAME",
                        help=f"a built-in preset ({', '.join(preset_names())}) or a PATH.yaml; "
                             "give it twice to layer one over another (--preset tiny --preset weird)")
    parser.add_argument("--config", metavar="FILE", help="a YAML settings file, applied after --preset")


def _command(sub: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text, epilog=f"example:\n  {EXAMPLES[name]}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


POSITIONAL = "<positional>"


class _Parser(argparse.ArgumentParser):
    """Also takes every flag spelled with underscores (--min_length for --min-length), and the
    original telephone game's own names (`aliases`), without showing them in --help."""

    aliases: dict[str, str] = {}

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        """As argparse's, but an unknown flag is reported by its command's parser (with that
        command's usage), not the top-level one's."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._commands().get(getattr(parsed, "command", None) or "", self)
            command.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _commands(self) -> dict[str, argparse.ArgumentParser]:
        return next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})

    def format_usage(self) -> str:
        """The usage printed above an error: a command's whole usage (30 lines for `run`) cut to
        what must be given; --help still shows all of it."""
        full = super().format_usage()
        if full.count("\n") <= 2:
            return full
        words = [self.prog]
        for action in self._actions:
            if not action.option_strings:
                words.append(action.metavar or action.dest)
            elif action.required:
                words.append(f"{action.option_strings[0]} {action.metavar or action.dest.upper()}")
        return f"usage: {' '.join(words)} [options]  (`{self.prog} --help` lists them)\n"

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        if args is not None:
            args = self._respell(list(args))
        return super().parse_known_args(args, namespace)

    def _respell(self, args: list[str]) -> list[str]:
        out: list[str] = []
        tail: list[str] = []
        it = iter(args)
        for arg in it:
            if arg == "--":
                out += [arg, *it]
                break
            name, eq, value = arg.partition("=")
            alias = self.aliases.get(name)
            if alias == POSITIONAL:  # --image_path PATH: the INPUT, after every option
                value = value if eq else next(it, None)
                tail += [arg] if value is None else ["--", value]  # no PATH: argparse names the flag
                continue
            if alias is None and name.startswith("--") and "_" in name and name not in self._option_string_actions:
                dashed = name.replace("_", "-")
                alias = dashed if dashed in self._option_string_actions else None
            out += ([alias, value] if eq else [alias]) if alias else [arg]
        return out + tail


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="video2dream",
        description="Re-imagine a video: frames -> CLIP Interrogator prompts -> SDXL dreams -> mp4.",
        epilog="example:\n  " + EXAMPLES["run"] + "\n\nVIDEO2DREAM_DEBUG=1 shows tracebacks instead of short errors.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"video2dream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _command(sub, "extract", "take one frame per 1/fps seconds of VIDEO into RUN_DIR/frames")
    p.add_argument("video", metavar="VIDEO")
    p.add_argument("-o", "--output", dest="run_dir", metavar="RUN_DIR", required=True)
    _add_options(p, EXTRACT + TIMING)
    _add_config(p)
    p.add_argument("--force", action="store_true", help="extract again, even from another video")
    _add_allow_damaged(p)

    p = _command(sub, "interrogate", "describe every frame with CLIP Interrogator into prompts.csv")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _add_options(p, INTERROGATE + [INTERROGATE_BATCH] + MODELS)
    _add_config(p)
    p.add_argument("--force", action="store_true", help="redo every row, hand-edited ones too")

    p = _command(sub, "generate", "paint a dream for every row of prompts.csv with SDXL")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _add_options(p, GENERATE + [GENERATE_BATCH] + MODELS)
    _add_config(p)
    p.add_argument("--force", action="store_true", help="paint every dream again")
    p.add_argument("--variants", type=int, metavar="K",
                   help="paint K candidates of each frame's dream into RUN_DIR/variants (dreams/ untouched); "
                        "make one the dream with `video2dream pick`")
    p.add_argument("--rows", metavar="LIST", help="with --variants: only these frames, by number (12,15-18)")

    p = _command(sub, "morph", "paint the in-betweens that morph each dream into the next (for --transition morph)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _add_options(p, MORPH + [o for o in ASSEMBLE if o[1] in ("assemble.audio", "assemble.out_fps")]
                 + [GENERATE_BATCH] + MODELS)
    _add_config(p)
    p.add_argument("--force", action="store_true", help="paint every in-between again")

    p = _command(sub, "assemble", "stitch the dreams (or frames) into an mp4 with the soundtrack")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-o", "--output", dest="set:assemble.output", metavar="OUT.mp4",
                   help="where to write the video (default RUN_DIR/dream.mp4)")
    _add_options(p, ASSEMBLE)
    p.add_argument("--round", type=int, metavar="K",
                   help="a telephone round's dreams (dreams_rKK; 1 is dreams/) -> RUN_DIR/dream_rKK.mp4")
    p.add_argument("--grid", action="store_true",
                   help="the frames and every telephone round side by side -> RUN_DIR/dream_grid.mp4")
    _add_config(p)
    p.add_argument("--force", action="store_true", help="encode again even if up to date")
    p.add_argument("--strict", action="store_true", help="refuse to assemble stale dreams (default: warn)")

    p = _command(sub, "mux-audio", "add or replace the soundtrack of RUN_DIR/dream.mp4 (no re-encode)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("source", metavar="SOURCE", help="an audio or video file; its first audio stream is used")

    p = _command(sub, "pick", "make candidate N of `generate --variants` FRAME's dream (its seed pinned in "
                 "prompts.csv; nothing repainted)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("frame", metavar="FRAME", help="the frame's number (12) or name (000012.png)")
    p.add_argument("number", metavar="N", type=int, help="the candidate, counted from 1")

    p = _command(sub, "status", "show what each stage has done, and what is stale or missing")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true",
                   help="print it as JSON: per stage its state, counts and the names of stale or missing units")

    p = _command(sub, "run", "extract, interrogate, generate (morph with --transition morph) and assemble, "
                 "skipping what is up to date")
    p.add_argument("video", metavar="VIDEO")
    p.add_argument("-o", "--output", dest="run_dir", metavar="RUN_DIR", required=True)
    _add_options(p, EXTRACT + TIMING + INTERROGATE + GENERATE + [GENERATE_BATCH] + ASSEMBLE + MORPH + MODELS)
    p.add_argument("--caption-batch-size", dest="set:interrogate.batch_size", type=int, default=None,
                   metavar="N", help="frames per caption batch (default 4)")
    _add_config(p)
    p.add_argument("--force", action="store_true", help="redo every stage")
    _add_allow_damaged(p)

    p = _command(sub, "telephone",
                 "the telephone game: caption -> SDXL -> caption ... N times, from an image, "
                 "each image of a folder, or every frame of a video")
    p.aliases = {"--image_path": POSITIONAL, "--output_prefix": "-o"}  # the original game's spellings
    p.add_argument("video", metavar="INPUT", help="an image, a folder of images, or a video")
    p.add_argument("-o", "--output", dest="run_dir", metavar="OUT_DIR", required=True)
    _add_options(p, TELEPHONE[:2])
    p.add_argument("--stop-at-fixed-point", dest="set:telephone.stop_at_fixed_point", default=None,
                   action=argparse.BooleanOptionalAction,
                   help="end the chain when a caption repeats an earlier one (default: go on)")
    _add_options(p, TELEPHONE[2:] + INTERROGATE[1:] + TELEPHONE_GENERATE + EXTRACT + MODELS)
    _add_config(p)
    p.add_argument("--force", action="store_true",
                   help="start over, also when OUT_DIR holds a chain made with other settings")

    p = _command(sub, "studio", "the review page of RUN_DIR in a browser: watch, fix prompts, repaint, assemble "
                 "(needs pip install 'video2dream[studio]')")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs the printed URL's token)")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    return parser


def command_flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """Setting path -> the flag that sets it in this command (each option's dest is "set:" + path):
    `telephone` sets generate.steps with --steps-per-image, `run` interrogate.batch_size with
    --caption-batch-size; a setting without a flag here is not in it."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest[4:]: a.option_strings[0] for a in sub.choices[command]._actions
            if a.dest.startswith("set:") and a.option_strings}


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user gave on the command line, as a nested mapping."""
    tree: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith("set:") or value is None:
            continue
        path = dest[4:].split(".")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = None if value is CLEAR else value
    g = tree.get("generate", {})
    for one, other in (("width", "height"), ("height", "width")):
        if one in g and not g[one] and other not in g:  # `--width auto` alone: the size is automatic
            g[other] = None
    return tree


def _add_allow_damaged(p: argparse.ArgumentParser) -> None:
    # A flag of this call, never saved: consent to one damaged file must not carry over to the next.
    p.add_argument("--allow-damaged", action="store_true",
                   help="extract what can be read of a damaged video (warns, naming the seconds affected)")


def settings_for(run: RunFolder, args: argparse.Namespace) -> Settings:
    return resolve(run.saved_settings(), getattr(args, "preset", None), getattr(args, "config", None),
                   overrides(args))


def _resume_hint(args: argparse.Namespace) -> str:
    """The command as it was typed: settings are saved only once a stage starts its work, so an
    interrupt before that would lose the flags of a shorter hint."""
    program = getattr(args, "program", "video2dream")
    argv = getattr(args, "argv", None)
    if argv:
        return f"{program} {shlex.join(argv)}"
    if args.command in ("extract", "run", "telephone"):
        return f"{program} {args.command} {shlex.quote(args.video)} -o {shlex.quote(args.run_dir)}"
    return f"{program} {args.command} {shlex.quote(args.run_dir)}"


def _program() -> str:
    """How this process was started, for the resume hint: `python -m video2dream` as typed, or the
    script's path as typed (`.venv/bin/video2dream` works without an activated venv; a bare
    `video2dream` only if that is what PATH finds)."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "__main__.py":  # python -m video2dream
        typed, given = list(getattr(sys, "orig_argv", [])), sys.argv[1:]
        head = typed[:len(typed) - len(given)]
        if typed[len(head):] == given and "-m" in head:
            return shlex.join(head)
        return "python -m video2dream"
    if not script or script.startswith("-"):
        return "video2dream"
    name = os.path.basename(script)
    found = shutil.which(name)
    with contextlib.suppress(OSError):
        if found and os.path.samefile(found, script):
            return name
    return shlex.quote(script)


def dispatch(args: argparse.Namespace) -> int:
    from . import pipeline

    run = RunFolder(args.run_dir)
    if args.command == "status":
        if args.json:
            import json

            print(json.dumps(pipeline.status_data(run), indent=2, ensure_ascii=False, default=str))
        else:
            print(pipeline.status_report(run))
        return 0
    if args.command == "studio":
        from .studio import serve

        if args.port is not None and not 0 < args.port < 65536:
            raise UserError(f"--port {args.port} is not a port number (1-65535)")
        serve(args.run_dir, args.host, args.port, args.open)
        return 0
    if args.command == "mux-audio":
        run.require()  # before the lock (the library's), which would create the folder
        pipeline.do_mux_audio(run, args.source)
        return 0
    if args.command in ("interrogate", "generate", "morph", "assemble", "pick"):
        run.require()  # before the lock, which would create the folder
    if args.command == "generate" and args.rows is not None and args.variants is None:
        raise UserError("--rows chooses the frames of --variants; add --variants K")
    if args.command == "assemble" and args.round is not None and getattr(args, "set:assemble.source"):
        raise UserError("give --round or --from, not both")
    settings = settings_for(run, args)
    if args.command == "assemble" and args.round is None and not args.grid \
            and settings.assemble.source == "frames" and getattr(args, "set:assemble.side_by_side", None):
        raise UserError("--side-by-side shows the frames beside the dreams; leave it out with --from frames")
    _call(args, run, settings)  # each library call takes the run folder's lock itself
    return 0


def _call(args: argparse.Namespace, run: RunFolder, settings: Settings) -> None:
    """The library's command for args: its flags unpacked into plain arguments."""
    from . import pipeline

    if args.command in ("extract", "run", "telephone"):
        do = {"extract": pipeline.do_extract, "run": pipeline.do_run, "telephone": pipeline.do_telephone}
        extra = {"allow_damaged": args.allow_damaged} if args.command != "telephone" else {}
        do[args.command](run, settings, args.video, force=args.force, **extra)
    elif args.command == "pick":
        pipeline.do_pick(run, settings, args.frame, args.number)
    elif args.command == "generate" and args.variants is not None:
        pipeline.do_variants(run, settings, args.variants, args.rows, force=args.force)
    elif args.command == "assemble":
        pipeline.do_assemble(run, settings, force=args.force, round=args.round, grid=args.grid,
                             strict=args.strict)
    else:
        {"interrogate": pipeline.do_interrogate, "generate": pipeline.do_generate,
         "morph": pipeline.do_morph}[args.command](
            run, settings, force=args.force)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted("stopped by SIGTERM")


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    real_process = argv is None  # the console script or python -m, not a caller in Python
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # for the resume hint
    args.program = _program() if real_process else "video2dream"
    _hush_library_warnings()
    args.flags = command_flags(parser, args.command)  # for errors about settings, in this command's words
    signal.signal(signal.SIGTERM, _on_sigterm)
    code = _guarded(lambda: dispatch(args), args)
    if real_process:
        exit_now(code)
    sys.exit(code)


def _hush_library_warnings() -> None:
    """diffusers passes huggingface_hub an argument it has deprecated: two lines of UserWarning
    above a load's one-line error (offline, a VAE or ControlNet not in the cache). Only that one."""
    warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument is deprecated",
                            category=UserWarning, module=r"huggingface_hub\.")


def exit_now(code: int) -> None:
    """End the process without the interpreter's module-by-module teardown.

    Tearing down torch, diffusers and transformers held the shell 2-9 s after the last line (and
    longer after Ctrl-C on a busy machine). Everything we write is closed and renamed by now; the
    worker threads and atexit handlers are still given their turn, and the streams are flushed."""
    import atexit
    import logging
    import os
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _guarded(body: Callable[[], int], args: argparse.Namespace) -> int:
    try:
        return body()
    except (KeyboardInterrupt, Interrupted):
        if debug_enabled():
            raise
        say(f"interrupted; finished work is kept. Resume with: {_resume_hint(args)}")
        return 130
    except UserError as e:
        if debug_enabled():
            raise
        text = e.render(getattr(args, "flags", {}))
        print(f"video2dream: error: {text}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence for a friendly CLI
        if debug_enabled():
            raise
        known = _known_error(e)
        if known:
            print(f"video2dream: error: {known}", file=sys.stderr)
            return 1
        print(f"video2dream: unexpected error: {e.__class__.__name__}: {_first_line(e)} "
              "(run again with VIDEO2DREAM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def _first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's text for a one-line message: its first line, cut (it may echo a huge value)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _known_error(e: Exception) -> str | None:
    """Errors of the libraries with one cause the user can act on, as that line."""
    detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
    image = sys.modules.get("PIL.Image")
    if image is not None and isinstance(e, image.DecompressionBombError):
        return (f"{_opened_image(e) or 'an image'} is too large to open safely ({detail}); "
                "use a smaller image or video")
    if isinstance(e, pickle.UnpicklingError):  # torch.load(weights_only=True) outside a model load
        return ("a weights file is a pickle that holds more than tensors, refused because loading it could "
                f"run code; use .safetensors weights [{detail}]")
    return None


def _opened_image(e: BaseException) -> str | None:
    """The file Pillow's Image.open was opening when e was raised (from its traceback), if any."""
    name = None
    tb = e.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__") == "PIL.Image" and frame.f_locals.get("filename"):
            name = frame.f_locals["filename"]
        tb = tb.tb_next
    return None if name is None else name.decode(errors="replace") if isinstance(name, bytes) else str(name)
