"""The commands: each stage with its settings saved, and `run`, which chains them. They take
Settings and plain arguments (the CLI unpacks its flags into them), never an argparse namespace."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from . import report
from .progress import say
from .runfolder import RunFolder
from .settings import Settings, per_call_paths, replace_section

F = TypeVar("F", bound=Callable[..., Any])
_held: set[str] = set()  # run folders whose lock this process holds (a command inside a command: `run`)


@contextlib.contextmanager
def locked(run: RunFolder) -> Iterator[None]:
    """The run folder's lock, for a library call: taken here unless this process holds it already
    (`run` calls extract, interrogate, ... under its one lock)."""
    where = os.path.realpath(run.root)
    if where in _held:
        yield
        return
    with run.lock():
        _held.add(where)
        try:
            yield
        finally:
            _held.discard(where)


_depth = 0  # library calls in progress in this process (`run` calls do_extract, ...)


def _end_of_command() -> None:
    """What lives for one command only: the Ray backend's actor pools."""
    import sys

    if "video2dream.backends.ray" in sys.modules:
        sys.modules["video2dream.backends.ray"].release_pools()


def library_call(fn: F) -> F:
    """A command anything can drive: it takes the run folder's lock itself, and reports to reporter
    (a keyword argument of every do_*; default: the current one, the CLI's bars and lines)."""
    @functools.wraps(fn)
    def call(run: RunFolder, *args: Any, reporter: report.Reporter | None = None, **kwargs: Any) -> Any:
        global _depth
        _depth += 1
        try:
            with report.using(reporter), locked(run):
                return fn(run, *args, **kwargs)
        finally:
            _depth -= 1
            if not _depth:
                _end_of_command()

    return call  # type: ignore[return-value]


_times: list[report.StageTime] | None = None  # while `run` runs: its stages' times, for its table


def _took(stage: str, start: float, made: int, unit: str, rated: bool = True) -> str:
    """A stage command's wall time since start (time.monotonic() on entry: its whole call, model
    loading included), reported as a timing event and kept for `run`'s table; in words for its
    summary line: '2 min 31 s, 0.08 dream/s'."""
    took = report.StageTime(stage, time.monotonic() - start, made, unit, rated)
    report.current().timing(took)
    if _times is not None:
        _times.append(took)
    return took.words()


def _saver(run: RunFolder, settings: Settings) -> Callable[[], None]:
    """Save the resolved settings once a stage is about to write (never on a failed start)."""
    def save() -> None:
        data = settings.to_dict()
        for section, name in per_call_paths(settings):  # `assemble --from frames -o x.mp4` is a one-off
            data[section].pop(name)
        run.save_settings(data)

    return save


@library_call
def do_extract(run: RunFolder, settings: Settings, video: str | Path, force: bool = False,
               allow_damaged: bool = False) -> None:
    from .stages.extract import extract

    start = time.monotonic()
    r = extract(run, video, settings, force=force, on_ready=_saver(run, settings), allow_damaged=allow_damaged)
    where = run.frames_dir
    took = _took("extract", start, 0 if r.skipped else r.frames, "frame")
    say(f"extract: up to date, {r.frames} frames in {where} ({took})" if r.skipped
        else f"extract: {r.frames} frames ({r.width}x{r.height}) in {where} ({took})")


def check_backend(settings: Settings) -> None:
    """The backend's prerequisites on this machine (its client, a token), before anything is written.
    A backend the folder's settings.yaml chose (not this command) says so, and how to undo it."""
    from .backends.base import backend_class
    from .errors import SettingError, UserError
    from .settings import SAVED, origin

    try:
        backend_class(settings.backend).check_ready(settings)
    except SettingError:
        raise
    except UserError as e:
        if origin(settings, "backend") != SAVED:
            raise
        raise UserError(f"{e} (backend '{settings.backend}' came from the run folder's settings.yaml, not this "
                        "command: `--backend local` undoes it)") from None



@library_call
def do_interrogate(run: RunFolder, settings: Settings, force: bool = False, only: list[str] | None = None) -> None:
    """only: these frames' rows alone (by name; the review page's re-caption of chosen rows)."""
    from .models.devices import free_memory
    from .stages.interrogate import interrogate

    start = time.monotonic()
    check_backend(settings)
    _check_paths(settings, "interrogate")
    r = interrogate(run, settings, force=force, on_ready=_saver(run, settings), backend=settings.backend, only=only)
    free_memory()
    took = _took("interrogate", start, len(r.done), "caption")
    say(f"interrogate: {len(r.done)} row(s) written, {r.up_to_date} up to date, "
        f"{len(r.kept_edited)} hand-edited kept -> {run.prompts_csv} ({took})")


@library_call
def do_generate(run: RunFolder, settings: Settings, force: bool = False, only: list[str] | None = None) -> None:
    """only: these frames' dreams alone (by name; the review page's repaint of chosen rows)."""
    from .models.devices import free_memory
    from .stages.generate import generate

    start = time.monotonic()
    check_backend(settings)
    _check_paths(settings, "generate")
    r = generate(run, settings, force=force, on_ready=_saver(run, settings), backend=settings.backend, only=only)
    free_memory()
    took = _took("generate", start, len(r.painted), "dream")
    say(f"generate: {len(r.painted)} dream(s) painted at {r.width}x{r.height}, "
        f"{r.up_to_date} up to date -> {run.dreams_dir} ({took})")


@library_call
def do_variants(run: RunFolder, settings: Settings, count: int, rows: str | None = None, force: bool = False) -> None:
    from .models.devices import free_memory
    from .stages.variants import generate_variants, variants_dir

    start = time.monotonic()
    r = generate_variants(run, settings, count, rows, force=force, on_ready=_saver(run, settings),
                          backend=settings.backend)
    free_memory()
    took = _took("variants", start, len(r.painted), "candidate")
    say(f"generate: {len(r.painted)} candidate(s) painted, {r.up_to_date} up to date ({count} for each of "
        f"{r.frames} frame(s)) -> {variants_dir(run)} ({took}); make one a dream with "
        f"`video2dream pick {run.root} FRAME N`")


@library_call
def do_pick(run: RunFolder, settings: Settings, frame: str, number: int) -> None:
    from .stages.variants import pick

    name = pick(run, settings, frame, number)
    say(f"pick: candidate {number} is now {run.dreams_dir / name} (its seed pinned in {run.prompts_csv.name})")



@library_call
def do_morph(run: RunFolder, settings: Settings, force: bool = False) -> None:
    from .models.devices import free_memory
    from .stages.morph import morph

    start = time.monotonic()
    check_backend(settings)
    _check_paths(settings, "generate")
    r = morph(run, settings, force=force, on_ready=_saver(run, settings), backend=settings.backend)
    free_memory()
    cuts = f", {r.cuts} hard cut(s)" if r.cuts else ""
    took = _took("morph", start, len(r.painted), "in-between")
    say(f"morph: {len(r.painted)} in-between(s) painted, {r.up_to_date} up to date "
        f"({r.gaps} gaps{cuts}, {r.pacing} pacing) -> {run.morphs_dir} ({took})")


@library_call
def do_assemble(run: RunFolder, settings: Settings, force: bool = False, round: int | None = None,
                grid: bool = False, strict: bool = False) -> None:
    """round: one telephone round's video (its dreams_rKK); grid: every round side by side;
    strict: refuse stale dreams rather than warn."""
    from .stages.assemble import assemble, assemble_grid, round_folder

    start = time.monotonic()
    if grid:  # telephone rounds side by side
        r = assemble_grid(run, settings, force=force, on_ready=_saver(run, settings), strict=strict)
        took = _took("assemble", start, 0 if r.skipped else 1, "video", rated=False)
        say(f"assemble: {'up to date' if r.skipped else 'wrote'} {r.output} ({r.duration:.2f} s; took {took})")
        return
    if round is not None:  # one telephone round: --round K is --from dreams_rKK
        settings = replace_section(settings, "assemble", source=round_folder(round))
        if not (run.root / settings.assemble.source).is_dir():
            from .errors import UserError
            from .stages.assemble import round_folders

            have = len(round_folders(run))
            raise UserError(f"{run.root} has no telephone round {round} (it has {have}); play more rounds "
                            f"with `video2dream telephone VIDEO -o {run.root} --steps {round}`")
    mended = mend_mux(run)
    if mended and settings.assemble.audio == mended[0]:  # the folder's sound, not one asked for now
        settings = replace_section(settings, "assemble", audio=mended[1])
    r = assemble(run, settings, force=force, on_ready=_saver(run, settings), strict=strict)
    extra = f" and {r.side_by_side}" if r.side_by_side else ""
    took = _took("assemble", start, 0 if r.skipped else 1, "video", rated=False)
    say(f"assemble: {'up to date' if r.skipped else 'wrote'} {r.output}{extra} "
        f"({r.duration:.2f} s, {r.sound}; took {took})")


@library_call
def do_mux_audio(run: RunFolder, source: str) -> None:
    """mux-audio: the sound goes into dream.mp4 now, and into the folder's settings for later."""
    from .settings import resolve
    from .stages.assemble import MUX_PENDING, mux_audio

    mend_mux(run)
    r = mux_audio(run, resolve(run.saved_settings()), source)
    _saver(run, r.settings)()
    run.clear_record(MUX_PENDING)  # files, records and settings all hold the new sound now
    say(f"mux-audio: {r.sound} is now in {', '.join(str(v) for v in r.videos)}; "
        "later assembles keep it (--audio auto goes back to the source's)")


def mend_mux(run: RunFolder) -> tuple[str, str] | None:
    """Settle a mux-audio killed between its files and its records (stages.assemble.mend_mux): the
    folder's assemble.audio before and after, when it changed."""
    from .settings import resolve
    from .stages.assemble import MUX_PENDING
    from .stages.assemble import mend_mux as mend

    if not run.read_record(MUX_PENDING):
        return None
    saved = resolve(run.saved_settings())
    settings, news = mend(run, saved)
    if settings is not None:
        _saver(run, settings)()
    run.clear_record(MUX_PENDING)
    say(news)
    return (saved.assemble.audio, settings.assemble.audio) if settings is not None else None


@library_call
def do_telephone(run: RunFolder, settings: Settings, video: str | Path, force: bool = False) -> None:
    from .models.devices import free_memory
    from .telephone import chain_settings, telephone

    settings = chain_settings(settings)
    _local_chain_only(settings)
    _check_before_saving(settings)
    r = telephone(video, run, settings, force=force, on_ready=_saver(run, settings), backend=settings.backend)
    free_memory()
    for line in r.summary():
        say(line)


def _local_chain_only(settings: Settings) -> None:
    """A chain's steps carry keys of their own, which hold no backend's part yet: a remote backend's
    pictures would pass for local ones. Refused before anything is written."""
    from .backends import key_part
    from .errors import SettingError

    if key_part(settings.backend, "paint", settings):
        raise SettingError("backend", f"'{settings.backend}' does not play the telephone game yet",
                           "play it with --backend local")


def _check_before_saving(settings: Settings) -> None:
    """telephone and run save their settings before their models load (extract comes first; a
    finished chain loads none): check first what can be checked without them, so that no such
    value is saved."""
    from .backends import key_part
    from .stages.engine import check_backend

    check_backend(settings, ("caption", "paint", "morph") if settings.assemble.transition == "morph"
                  else ("caption", "paint"))  # a setting the backend would drop: refused before it is paid
    if key_part(settings.backend, "paint", settings):
        if settings.generate.style_image:  # refused before `run` pays for a caption
            from .directing import _local_only

            _local_only(settings.backend, settings)
        return  # a remote service's models: no device, scheduler or LoRA of this machine's
    from .models.devices import check_device
    from .models.paths import check_model_paths

    check_model_paths(settings)  # a path that is not there, named before extract or a chain writes
    from .models.painter import _check_lora, _scheduler_class

    check_device(settings.device, settings.dtype)
    g = settings.generate
    if g.scheduler:
        _scheduler_class(g.scheduler)
    if g.lora:
        _check_lora(g.lora)


def _check_paths(settings: Settings, stage: str) -> None:
    """The stage's model settings that name missing files or folders, before anything loads or is saved."""
    from .backends import key_part
    from .models.paths import check_model_paths

    if not key_part(settings.backend, "caption" if stage == "interrogate" else "paint", settings):
        check_model_paths(settings, (stage,))


@library_call
def do_run(run: RunFolder, settings: Settings, video: str | Path, force: bool = False,
           allow_damaged: bool = False) -> None:
    global _times
    start, _times = time.monotonic(), []
    try:
        _check_before_saving(settings)  # before extract writes anything (and saves the settings)
        check_backend(settings)  # no frames, no settings.yaml for a run that cannot reach its backend
        # each looked up when called (scripts/bench_run.py wraps them)
        do_extract(run, settings, video, force=force, allow_damaged=allow_damaged)
        _before_remote_run(run, settings, force)
        do_interrogate(run, settings, force=force)
        do_generate(run, settings, force=force)
        if settings.assemble.transition == "morph":  # the in-betweens the video shows
            do_morph(run, settings, force=force)
        do_assemble(run, settings, force=force)
        rows = _times
    finally:
        _times = None
    report.current().times(rows, time.monotonic() - start)  # each stage's time, and the whole command's


def _before_remote_run(run: RunFolder, settings: Settings, force: bool) -> None:
    """`run` on a remote backend: what the whole command may create (the captions now, and at most a
    dream for each frame captioned now or whose dream is not current), said and checked against
    --max-predictions before the first is created. Extract (local, free) has run."""
    from .backends import backend_for, key_part
    from .errors import UserError
    from .stages import generate, interrogate, morph

    if not key_part(settings.backend, "caption", settings):
        return  # this machine's (or a cluster's) models: nothing is paid per unit
    captions, _ = interrogate.plan_units(run, settings, force, settings.backend)
    dreams = {u.name for u in captions}
    try:
        paints, _ = generate.plan_units(run, settings, force, settings.backend)
        dreams |= {u.name for u in paints}
    except UserError:  # no prompts.csv yet (or one generate refuses; interrogate fixes it first)
        dreams = {n for n in interrogate.read_frames(run.frames_csv)["filename"]}
    # each gap's in-betweens: one prediction (a frame interpolation model makes them in one call)
    fill = morph.gaps_to_fill(run, settings) if settings.assemble.transition == "morph" else 0
    backend_for(settings.backend).before(run.root, captions, settings, later=len(dreams), later_gaps=fill)


@library_call
def edit_row(run: RunFolder, filename: str, prompt: str | None = None, negative_prompt: str | None = None) -> bool:
    """Edit one row of prompts.csv as a person editing the file would: its prompt (and/or negative
    prompt) cells change, nothing else (its text_hash stays, so the row reads as edited by hand: a
    later interrogate keeps it, status shows it as edited, generate paints that frame again). Under
    the run folder's lock. Whether the file changed (the same words again change nothing)."""
    from .errors import UserError
    from .stages.interrogate import FIX
    from .tables import read_csv, write_csv

    if prompt is None and negative_prompt is None:
        return False
    df = read_csv(run.prompts_csv, ["filename", "prompt"], FIX)
    rows = df.index[df["filename"] == filename].tolist()
    if not rows:
        raise UserError(f"{run.prompts_csv} has no row for {filename}; give one of its frames "
                        f"(`video2dream status {run.root}`)")
    changed = False
    for column, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if text is None:
            continue
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # as read_prompts reads an editor's CRLF
        if column not in df.columns:
            df[column] = ""
        if df.at[rows[0], column] != text:
            df.at[rows[0], column] = text
            changed = True
    if changed:
        write_csv(run.prompts_csv, df)
    return changed


def status_data(run: RunFolder) -> dict[str, Any]:
    """What each stage has done, and what is stale or missing, by name: the data behind `status`
    (and `status --json`). extract is done or not run; the other stages and each video are current,
    stale, missing (some units not made yet; stale wins when both), not run or error (with its text)."""
    from .errors import UserError
    from .settings import differences, resolve

    if not run.root.is_dir():
        raise UserError(f"run folder {run.root} does not exist; check the path, or make it with "
                        f"`video2dream extract VIDEO -o {run.root}`")
    settings = resolve(run.saved_settings())
    data: dict[str, Any] = {"run_folder": str(run.root), "source": _source_data(run)}
    done = run.read_record("extract")
    if not done or not run.frames_csv.is_file():  # the same keys, so that a script need not check
        not_run = {"state": "not run"}
        return {**data, "extract": not_run, "interrogate": not_run, "generate": not_run, "morph": not_run,
                "sound": None,
                "videos": [], "settings": differences(settings)}
    from .stages import generate, interrogate, morph

    data["extract"] = {"state": "done", "frames": done["frames"], "fps": done["fps"],
                       "width": done["width"], "height": done["height"],
                       "at": done.get("at", "seconds"), "cuts": done.get("cuts", 0), "kinds": _kinds(run)}
    if done.get("damaged"):
        data["extract"]["damaged"] = done["damaged"]
    data["interrogate"] = interrogate.status_data(run, settings)
    data["generate"] = generate.status_data(run, settings)
    data["morph"] = morph.status_data(run, settings)
    for stage in ("interrogate", "generate", "morph"):  # the command that makes each current
        if data[stage]["state"] in ("stale", "missing"):
            data[stage]["command"] = f"video2dream {stage} {run.root}"
    data["sound"] = _sound_data(run, settings)
    data["videos"] = _videos_data(run, settings, data)
    data["settings"] = differences(settings)
    return data


def _kinds(run: RunFolder) -> dict[str, int]:
    """How many keyframes of each kind frames.csv holds: {"tick": 1, "beat": 6, "cut": 1}."""
    from .errors import UserError
    from .tables import read_frames

    try:
        kinds = read_frames(run.frames_csv)["kind"].tolist()
    except UserError:
        return {}
    return {k: kinds.count(k) for k in ("tick", "beat", "cut") if k in kinds}


def _timing_words(e: dict[str, Any]) -> str:
    """'3 frames at 1.0 fps', or each kind counted: '8 frames: 1 at 1.0 fps, 6 on the beats and 1 at
    shot cuts' (a record from before --at: seconds)."""
    kinds = e.get("kinds") or {"tick": e["frames"]}
    if set(kinds) <= {"tick"}:
        return f"{e['frames']} frames at {e['fps']} fps"
    words = {"tick": f"at {e['fps']} fps", "beat": "on the beats", "cut": "at shot cuts"}
    parts = [f"{kinds[k]} {words[k]}" for k in words if kinds.get(k)]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    return f"{e['frames']} frames: {listed}"


def _stale_hint(d: dict[str, Any]) -> str:
    return f"; run `{d['command']}`" if d.get("command") else ""


def status_report(run: RunFolder) -> str:
    """What each stage has done, and what is stale or missing, as a few lines of text."""
    from .stages import generate, interrogate, morph

    d = status_data(run)
    lines = [f"run folder  {d['run_folder']}"]
    src = d["source"]
    if src:
        sound = "with audio" if src["has_audio"] else "no audio"
        note = {"present": "", "gone": ", gone", "changed": ", CHANGED since extract"}[src["state"]]
        lines.append(f"source      {src['path']} ({src['duration']:.2f} s, {sound}){note}")
    e = d["extract"]
    if e["state"] == "not run":
        return "\n".join(lines + ["extract     not run"])
    damaged = f" (from a damaged source: {e['damaged']})" if e.get("damaged") else ""
    lines.append(f"extract     {_timing_words(e)}, {e['width']}x{e['height']}{damaged}")
    lines.append(f"interrogate {interrogate.status_line(d['interrogate'])}{_stale_hint(d['interrogate'])}")
    lines.append(f"generate    {generate.status_line(d['generate'])}{_stale_hint(d['generate'])}")
    if d["morph"]["state"] != "not run":
        lines.append(f"morph       {morph.status_line(d['morph'])}{_stale_hint(d['morph'])}")
    lines.append(f"audio       {d['sound'].get('says') or 'cannot be used: ' + d['sound']['error']}")
    lines += [_video_line(v) for v in d["videos"]]
    return "\n".join(lines + settings_lines(d["settings"]))


def _source_data(run: RunFolder) -> dict[str, Any] | None:
    from . import media

    src = run.read_record("source")
    if not src:
        return None
    p = src.get("probe", {})
    path = Path(src.get("path", ""))
    if not path.is_file():
        state = "gone"
    elif media.source_changed(src, path):
        state = "changed"
    else:
        state = "present"
    return {"path": src.get("path"), "duration": p.get("duration", 0), "has_audio": bool(p.get("has_audio")),
            "state": state}


def _sound_data(run: RunFolder, settings: Settings) -> dict[str, Any]:
    from .errors import UserError
    from .stages.assemble import audio_source

    try:
        return {"says": audio_source(run, settings.assemble.audio).says}
    except UserError as e:
        return {"says": None, "error": str(e)}


def _videos_data(run: RunFolder, settings: Settings, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each video of the folder: current, stale (and how to update it), or not run. A video is
    current only if every picture in it is: one of stale dreams is stale whatever its key says."""
    from .stages.assemble import round_folders

    videos = [_pictures_first(run, settings, data, _video_data(run, settings, "dream.mp4", "assemble", "dreams", ""))]
    pending = run.read_record("mux-pending")
    if pending and videos[0]["state"] != "not run":  # its sound may be the old or the new one
        videos[0] = {**videos[0], "state": "stale",
                     "error": f"mux-audio of {pending.get('sound')} was stopped part way, so its sound is not "
                              f"known; run `video2dream assemble {run.root}` to settle it"}
    for k, folder in enumerate(round_folders(run)[1:], start=2):
        videos.append({**_video_data(run, settings, f"round {k}", f"assemble-{folder}", folder, f" --round {k}"),
                       "round": k})
    if run.read_record("assemble-grid") or (run.root / "dreams_r02").is_dir():
        videos.append(_pictures_first(run, settings, data,
                                      _video_data(run, settings, "grid", "assemble-grid", "grid", " --grid")))
    return videos


def _pictures_first(run: RunFolder, settings: Settings, data: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
    """v made stale when the dreams (or in-betweens) it shows are not current, with the stage to
    run before assembling again (or `run`, which does it all) named first."""
    if v["state"] == "not run" or v.get("from") == "frames":
        return v
    stages = ["generate"] + (["morph"] if settings.assemble.transition == "morph" and "from" in v else [])
    for stage in stages:
        d = data[stage]
        if d["state"] != "stale":
            continue
        src = (data.get("source") or {}).get("path")
        again = f" (or `video2dream run {src} -o {run.root}` for all of it)" if src else ""
        what = "dreams" if stage == "generate" else "in-betweens"
        return {**v, "state": "stale", "stale_pictures": len(d["stale"]),
                "command": f"video2dream {stage} {run.root}", "then": v["command"],
                "error": f"{len(d['stale'])} of its {d['total']} {what} are stale; run "
                         f"`video2dream {stage} {run.root}`, then `{v['command']}`{again}"}
    return v


def _video_data(run: RunFolder, settings: Settings, name: str, record: str, source: str,
                flags: str) -> dict[str, Any]:
    from .errors import UserError
    from .settings import replace_section
    from .stages.assemble import from_record, grid_plan, plan

    command = f"video2dream assemble {run.root}{flags}"
    done = run.read_record(record) or {}
    out = from_record(run, done["output"]) if done.get("output") else None
    if out is None or not out.is_file():
        return {"video": name, "state": "not run", "command": command}
    v: dict[str, Any] = {"video": name, "output": str(out), "duration": done.get("duration", 0),
                         "sound": done.get("sound"), "command": command}
    try:
        if source == "grid":
            v["folders"] = len(done.get("folders") or [])
            p = grid_plan(run, replace_section(settings, "assemble", output=None), rounds=v["folders"] - 1 or None)
        else:
            v["from"] = done.get("source", source)
            p = plan(run, replace_section(settings, "assemble", source=v["from"], output=None))
        v["state"] = "current" if p.key == done.get("key") else "stale"
    except UserError as e:
        v["state"], v["error"] = "stale", str(e)
    return v


def _video_line(v: dict[str, Any]) -> str:
    label = {"dream.mp4": "assemble", "grid": "grid"}.get(v["video"], v["video"])
    label = f"round {v['round']:<6d}" if "round" in v else f"{label:<12}"
    if v["state"] == "not run":
        return f"{label}not run" if v["video"] == "dream.mp4" else f"{label}not made ({v['command']})"
    what = f"{v['output']} of {v['folders']} folders" if "folders" in v else f"{v['output']} from {v['from']}"
    state = v["state"] if v["state"] == "current" else f"STALE ({v['error']})" if "error" in v else \
        f"STALE: its pictures, settings or sound changed; run `{v['command']}`"
    return f"{label}{what} ({v['duration']:.2f} s, {v['sound'] or 'sound not recorded'}): {state}"


def settings_lines(changed: dict[str, Any]) -> list[str]:
    """The folder's settings that differ from the built-in defaults, for status."""
    from .settings import describe_differences

    lines = describe_differences(changed) or ["all built-in defaults"]
    return [f"{'settings' if k == 0 else '':<12}{line}" for k, line in enumerate(lines)]
