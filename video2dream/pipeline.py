"""The commands: each stage with its settings saved, and `run`, which chains them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from .progress import say
from .runfolder import RunFolder
from .settings import Settings, replace_section


def _saver(run: RunFolder, settings: Settings) -> Callable[[], None]:
    """Save the resolved settings once a stage is about to write (never on a failed start)."""
    def save() -> None:
        data = settings.to_dict()
        for per_call in ("source", "output"):  # `assemble --from frames -o x.mp4` is a one-off
            data["assemble"].pop(per_call)
        run.save_settings(data)

    return save


def do_extract(run: RunFolder, settings: Settings, args: argparse.Namespace) -> None:
    from .stages.extract import extract

    r = extract(run, args.video, settings, force=args.force, on_ready=_saver(run, settings))
    where = run.frames_dir
    say(f"extract: up to date, {r.frames} frames in {where}" if r.skipped
        else f"extract: {r.frames} frames ({r.width}x{r.height}) in {where}")


def do_interrogate(run: RunFolder, settings: Settings, args: argparse.Namespace) -> None:
    from .models.devices import free_memory
    from .stages.interrogate import interrogate

    r = interrogate(run, settings, force=args.force, on_ready=_saver(run, settings))
    free_memory()
    say(f"interrogate: {len(r.done)} row(s) written, {r.up_to_date} up to date, "
        f"{len(r.kept_edited)} hand-edited kept -> {run.prompts_csv}")


def do_generate(run: RunFolder, settings: Settings, args: argparse.Namespace) -> None:
    from .models.devices import free_memory
    from .stages.generate import generate

    r = generate(run, settings, force=args.force, on_ready=_saver(run, settings))
    free_memory()
    say(f"generate: {len(r.painted)} dream(s) painted at {r.width}x{r.height}, "
        f"{r.up_to_date} up to date -> {run.dreams_dir}")


def do_assemble(run: RunFolder, settings: Settings, args: argparse.Namespace) -> None:
    from .stages.assemble import assemble, assemble_grid, round_folder

    if getattr(args, "grid", False):  # telephone rounds side by side
        r = assemble_grid(run, settings, force=args.force, on_ready=_saver(run, settings))
        say(f"assemble: {'up to date' if r.skipped else 'wrote'} {r.output} ({r.duration:.2f} s)")
        return
    if getattr(args, "round", None) is not None:  # one telephone round: --round K is --from dreams_rKK
        settings = replace_section(settings, "assemble", source=round_folder(args.round))
        if not (run.root / settings.assemble.source).is_dir():
            from .errors import UserError
            from .stages.assemble import round_folders

            have = len(round_folders(run))
            raise UserError(f"{run.root} has no telephone round {args.round} (it has {have}); play more rounds "
                            f"with `video2dream telephone VIDEO -o {run.root} --steps {args.round}`")
    r = assemble(run, settings, force=args.force, on_ready=_saver(run, settings))
    sound = f"sound from {Path(r.audio).name}" if r.audio else "no sound"
    extra = f" and {r.side_by_side}" if r.side_by_side else ""
    say(f"assemble: {'up to date' if r.skipped else 'wrote'} {r.output}{extra} "
        f"({r.duration:.2f} s, {sound})")


def do_telephone(run: RunFolder, settings: Settings, args: argparse.Namespace) -> None:
    from .models.devices import free_memory
    from .telephone import chain_settings, telephone

    settings = chain_settings(settings)
    _check_before_saving(settings)
    r = telephone(args.video, run, settings, force=args.force, on_ready=_saver(run, settings))
    free_memory()
    for line in r.summary():
        say(line)


def _check_before_saving(settings: Settings) -> None:
    """telephone and run save their settings before their models load (extract comes first; a
    finished chain loads none): check first what can be checked without them, so that no such
    value is saved."""
    from .models.devices import check_device
    from .models.painter import _check_lora, _scheduler_class

    check_device(settings.device, settings.dtype)
    g = settings.generate
    if g.scheduler:
        _scheduler_class(g.scheduler)
    if g.lora:
        _check_lora(g.lora)


def do_run(run: RunFolder, settings: Settings, args: argparse.Namespace) -> None:
    _check_before_saving(settings)  # before extract writes anything (and saves the settings)
    for step in (do_extract, do_interrogate, do_generate, do_assemble):
        step(run, settings, args)


COMMANDS: dict[str, Callable[[RunFolder, Settings, argparse.Namespace], None]] = {
    "extract": do_extract,
    "interrogate": do_interrogate,
    "generate": do_generate,
    "assemble": do_assemble,
    "run": do_run,
    "telephone": do_telephone,
}


def status_report(run: RunFolder) -> str:
    """What each stage has done, and what is stale or missing, as a few lines of text."""
    from .settings import resolve

    if not run.root.is_dir():
        return f"{run.root}: no such run folder"
    settings = resolve(run.saved_settings())
    lines = [f"run folder  {run.root}"]
    src = run.read_record("source")
    if src:
        p = src.get("probe", {})
        sound = "with audio" if p.get("has_audio") else "no audio"
        lines.append(f"source      {src.get('path')} ({p.get('duration', 0):.2f} s, {sound})")
    done = run.read_record("extract")
    if not done or not run.frames_csv.is_file():
        lines.append("extract     not run")
        return "\n".join(lines)
    lines.append(f"extract     {done['frames']} frames at {done['fps']} fps, {done['width']}x{done['height']}")
    from .stages import generate, interrogate

    lines.append(f"interrogate {interrogate.status(run, settings)}")
    lines.append(f"generate    {generate.status(run, settings)}")
    asm = run.read_record("assemble")
    if asm and Path(asm.get("output", "")).is_file():
        lines.append(f"assemble    {asm['output']} from {asm.get('source')} ({asm.get('duration', 0):.2f} s)")
    else:
        lines.append("assemble    not run")
    lines += settings_lines(settings)
    return "\n".join(lines)


def settings_lines(settings: Settings) -> list[str]:
    """The folder's settings that differ from the built-in defaults, for status."""
    from .settings import describe

    changed = describe(settings) or ["all built-in defaults"]
    return [f"{'settings' if k == 0 else '':<12}{line}" for k, line in enumerate(changed)]
