"""The commands: each stage with its settings saved, and `run`, which chains them. They take
Settings and plain arguments (the CLI unpacks its flags into them), never an argparse namespace."""

from __future__ import annotations

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


def do_extract(run: RunFolder, settings: Settings, video: str | Path, force: bool = False) -> None:
    from .stages.extract import extract

    r = extract(run, video, settings, force=force, on_ready=_saver(run, settings))
    where = run.frames_dir
    say(f"extract: up to date, {r.frames} frames in {where}" if r.skipped
        else f"extract: {r.frames} frames ({r.width}x{r.height}) in {where}")


def do_interrogate(run: RunFolder, settings: Settings, force: bool = False) -> None:
    from .models.devices import free_memory
    from .stages.interrogate import interrogate

    r = interrogate(run, settings, force=force, on_ready=_saver(run, settings))
    free_memory()
    say(f"interrogate: {len(r.done)} row(s) written, {r.up_to_date} up to date, "
        f"{len(r.kept_edited)} hand-edited kept -> {run.prompts_csv}")


def do_generate(run: RunFolder, settings: Settings, force: bool = False) -> None:
    from .models.devices import free_memory
    from .stages.generate import generate

    r = generate(run, settings, force=force, on_ready=_saver(run, settings))
    free_memory()
    say(f"generate: {len(r.painted)} dream(s) painted at {r.width}x{r.height}, "
        f"{r.up_to_date} up to date -> {run.dreams_dir}")


def do_assemble(run: RunFolder, settings: Settings, force: bool = False, round: int | None = None,
                grid: bool = False) -> None:
    """round: one telephone round's video (its dreams_rKK); grid: every round side by side."""
    from .stages.assemble import assemble, assemble_grid, round_folder

    if grid:  # telephone rounds side by side
        r = assemble_grid(run, settings, force=force, on_ready=_saver(run, settings))
        say(f"assemble: {'up to date' if r.skipped else 'wrote'} {r.output} ({r.duration:.2f} s)")
        return
    if round is not None:  # one telephone round: --round K is --from dreams_rKK
        settings = replace_section(settings, "assemble", source=round_folder(round))
        if not (run.root / settings.assemble.source).is_dir():
            from .errors import UserError
            from .stages.assemble import round_folders

            have = len(round_folders(run))
            raise UserError(f"{run.root} has no telephone round {round} (it has {have}); play more rounds "
                            f"with `video2dream telephone VIDEO -o {run.root} --steps {round}`")
    r = assemble(run, settings, force=force, on_ready=_saver(run, settings))
    extra = f" and {r.side_by_side}" if r.side_by_side else ""
    say(f"assemble: {'up to date' if r.skipped else 'wrote'} {r.output}{extra} "
        f"({r.duration:.2f} s, {r.sound})")


def do_mux_audio(run: RunFolder, source: str) -> None:
    """mux-audio: the sound goes into dream.mp4 now, and into the folder's settings for later."""
    from .settings import resolve
    from .stages.assemble import mux_audio

    r = mux_audio(run, resolve(run.saved_settings()), source)
    _saver(run, r.settings)()
    say(f"mux-audio: {r.sound} is now in {', '.join(str(v) for v in r.videos)}; "
        "later assembles keep it (--audio auto goes back to the source's)")


def do_telephone(run: RunFolder, settings: Settings, video: str | Path, force: bool = False) -> None:
    from .models.devices import free_memory
    from .telephone import chain_settings, telephone

    settings = chain_settings(settings)
    _check_before_saving(settings)
    r = telephone(video, run, settings, force=force, on_ready=_saver(run, settings))
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


def do_run(run: RunFolder, settings: Settings, video: str | Path, force: bool = False) -> None:
    _check_before_saving(settings)  # before extract writes anything (and saves the settings)
    do_extract(run, settings, video, force=force)  # each looked up when called (scripts/bench_run.py wraps them)
    do_interrogate(run, settings, force=force)
    do_generate(run, settings, force=force)
    do_assemble(run, settings, force=force)


def status_report(run: RunFolder) -> str:
    """What each stage has done, and what is stale or missing, as a few lines of text."""
    from .errors import UserError
    from .settings import resolve

    if not run.root.is_dir():
        raise UserError(f"run folder {run.root} does not exist; check the path, or make it with "
                        f"`video2dream extract VIDEO -o {run.root}`")
    settings = resolve(run.saved_settings())
    lines = [f"run folder  {run.root}"]
    src = run.read_record("source")
    if src:
        p = src.get("probe", {})
        sound = "with audio" if p.get("has_audio") else "no audio"
        lines.append(f"source      {src.get('path')} ({p.get('duration', 0):.2f} s, {sound}){_source_note(src)}")
    done = run.read_record("extract")
    if not done or not run.frames_csv.is_file():
        lines.append("extract     not run")
        return "\n".join(lines)
    lines.append(f"extract     {done['frames']} frames at {done['fps']} fps, {done['width']}x{done['height']}")
    from .stages import generate, interrogate

    lines.append(f"interrogate {interrogate.status(run, settings)}")
    lines.append(f"generate    {generate.status(run, settings)}")
    return "\n".join(lines + _video_lines(run, settings) + settings_lines(settings))


def _source_note(src: dict) -> str:
    from . import media

    path = Path(src.get("path", ""))
    if not path.is_file():
        return ", gone"
    if src.get("fingerprint") and media.fingerprint(path) != src["fingerprint"]:
        return ", CHANGED since extract"
    return ""


def _video_lines(run: RunFolder, settings: Settings) -> list[str]:
    """The sound, then each video of the folder: current, stale (and how to update it), or not made."""
    from .errors import UserError
    from .stages.assemble import audio_source, round_folders

    try:
        sound = audio_source(run, settings.assemble.audio).says
    except UserError as e:
        sound = f"cannot be used: {e}"
    lines = [f"audio       {sound}"]
    lines.append(_video_line(run, settings, "assemble    ", "assemble", "dreams", ""))
    for k, folder in enumerate(round_folders(run)[1:], start=2):
        lines.append(_video_line(run, settings, f"round {k:<6d}", f"assemble-{folder}", folder, f" --round {k}"))
    if run.read_record("assemble-grid") or (run.root / "dreams_r02").is_dir():
        lines.append(_video_line(run, settings, "grid        ", "assemble-grid", "grid", " --grid"))
    return lines


def _video_line(run: RunFolder, settings: Settings, label: str, record: str, source: str, flags: str) -> str:
    from .errors import UserError
    from .settings import replace_section
    from .stages.assemble import from_record, grid_plan, plan

    done = run.read_record(record) or {}
    out = from_record(run, done["output"]) if done.get("output") else None
    if out is None or not out.is_file():
        return f"{label}not run" if record == "assemble" else \
            f"{label}not made (video2dream assemble {run.root}{flags})"
    try:
        if source == "grid":
            folders = done.get("folders") or []
            what = f"{out} of {len(folders)} folders"
            p = grid_plan(run, replace_section(settings, "assemble", output=None), rounds=len(folders) - 1 or None)
        else:
            what = f"{out} from {done.get('source', source)}"
            p = plan(run, replace_section(settings, "assemble", source=done.get("source", source), output=None))
        state = "current" if p.key == done.get("key") else \
            f"STALE: its pictures, settings or sound changed; run `video2dream assemble {run.root}{flags}`"
    except UserError as e:
        state = f"STALE ({e})"
    return f"{label}{what} ({done.get('duration', 0):.2f} s, {done.get('sound', 'sound not recorded')}): {state}"


def settings_lines(settings: Settings) -> list[str]:
    """The folder's settings that differ from the built-in defaults, for status."""
    from .settings import describe

    changed = describe(settings) or ["all built-in defaults"]
    return [f"{'settings' if k == 0 else '':<12}{line}" for k, line in enumerate(changed)]
