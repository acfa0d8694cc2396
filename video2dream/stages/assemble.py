"""assemble: dreams/ (or frames/) + frames.csv (+ audio) -> dream.mp4, and mux-audio.

Each image is held from its own timestamp to the next one's (ffmpeg's concat demuxer with a duration
per image), so the picture keeps time with the source and its soundtrack. The output is the source's
display size; images of another size are scaled to cover it and centre-cropped (never stretched).
The audio is cut to the picture: a longer soundtrack never makes the last image hang on screen.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import media, report
from ..errors import UserError
from ..pngmeta import png_decodes
from ..progress import say
from ..runfolder import STATE, RunFolder, atomic_path
from ..settings import Settings, key_fields, replace_section, stable_hash
from ..tables import read_frames


@dataclass
class AssembleResult:
    output: Path
    side_by_side: Path | None
    skipped: bool
    sound: str  # where the soundtrack came from, for the user: "sound from clip.mp4 (the source)"
    duration: float


@dataclass
class Timeline:
    names: list[str]
    times: list[float]  # output seconds at which each image appears
    duration: float  # output length in seconds
    source_start: float  # source second at output time 0 (for the audio)
    width: int
    height: int


def timeline(run: RunFolder) -> Timeline:
    run.require()
    df = read_frames(run.frames_csv)
    done = run.read_record("extract")
    if not done:
        raise UserError(f"extract did not finish in {run.root}; run `video2dream extract VIDEO -o {run.root}` again")
    start, end = float(done["start"]), float(done["end"])
    _check_times(run, df["filename"].tolist(), df["time"].tolist(), start, end)
    times = [t - start for t in df["time"].tolist()]
    if times[-1] >= end - start:  # a frame sampled at the very end still gets one output frame
        end = start + times[-1] + 1.0 / float(done["fps"])
    width, height = int(done["width"]) // 2 * 2, int(done["height"]) // 2 * 2
    return Timeline(df["filename"].tolist(), times, end - start, start, max(width, 2), max(height, 2))


def _check_times(run: RunFolder, names: list[str], times: list[float], start: float, end: float) -> None:
    """Every time of frames.csv within what was extracted of the probed source: a time typed far past
    the end would otherwise make an encode of that length (hours of one held picture)."""
    probed = ((run.read_record("source") or {}).get("probe") or {}).get("duration")
    last = min(end, float(probed)) if probed else end
    slack = 1e-3  # frames.csv holds times to the microsecond
    for row, (name, t) in enumerate(zip(names, times, strict=True), start=2):
        if not start - slack <= t <= last + slack:  # also false for NaN
            raise UserError(f"{run.frames_csv} row {row} ({name}): time {t:g} s is outside the extracted "
                            f"{start:g}-{last:g} s of the source; fix that time, or run `video2dream "
                            f"extract VIDEO -o {run.root} --force` to write frames.csv again")


def image_paths(run: RunFolder, folder: str, names: list[str]) -> list[Path]:
    """The images to show, checked: every one present and a readable picture."""
    from PIL import Image

    base = run.root / folder  # frames, dreams, or a telephone round's dreams_rNN
    paths = [base / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        morph = f"run `video2dream morph {run.root}` first, or assemble with --transition cut or crossfade"
        fix = ("run `video2dream generate` first, or assemble the frames with --from frames"
               if folder == "dreams" else morph if folder == "morphs"
               else "run `video2dream extract` again" if folder == "frames"
               else f"run `video2dream telephone VIDEO -o {run.root}` again to finish that round")
        raise UserError(f"{len(missing)} of {len(paths)} images missing in {base}: {shown}; {fix}")
    for p in paths:
        try:
            # PIL's verify checks a PNG's checksums, not that its image data inflates.
            if p.suffix.lower() == ".png" and not png_decodes(p):
                raise ValueError(p)
            with Image.open(p) as im:
                im.verify()
        except Exception:
            stage = {"frames": "extract", "morphs": "morph"}.get(folder, "generate")
            raise UserError(f"{p} is not a readable image (corrupt or cut short); delete it and "
                            f"run `video2dream {stage}` again") from None
    return paths


def _quote(path: Path) -> str:
    """One `file` line's path, quoted for ffconcat. A line break would end the line and let the rest
    be read as directives, and a NUL cuts the path: refuse those (the table names are checked when
    read; this is the last line of defence)."""
    text = str(path)
    if any(c in text for c in "\n\r\0"):
        raise UserError(f"cannot give ffmpeg the path {text!r}: it holds a line break or NUL; rename it")
    text = str(path.resolve())
    return "'" + text.replace("'", "'\\''") + "'"


def _entry(path: Path) -> list[str]:
    """One image of an ffconcat script. pattern_type none: a folder named like '-x%d' is a number
    pattern to the image2 demuxer, which would read '-x0/...' or '-x1/...' in its place if they exist."""
    return [f"file {_quote(path)}", "option pattern_type none"]


def concat_script(paths: list[Path], times: list[float], duration: float) -> str:
    """An ffconcat script holding each image until the next one's time, the last until the end."""
    lines = ["ffconcat version 1.0"]
    ends = times[1:] + [duration]
    for path, start, stop in zip(paths, times, ends, strict=True):
        lines += [*_entry(path), f"duration {max(stop - start, 1e-3):.6f}"]
    lines += _entry(paths[-1])  # the demuxer ignores the last entry's duration
    return "\n".join(lines) + "\n"


@dataclass
class Sound:
    path: Path | None  # whose first audio stream to use; None: silent
    says: str  # for the user: "sound from clip.mp4 (the source)", "no sound", ...
    warning: str | None = None  # said when the video is encoded


def audio_source(run: RunFolder, audio: str) -> Sound:
    """Which file's first audio stream to use. 'auto' is the source's, checked as extract checks it:
    a source changed since it was extracted would put another sound under these pictures."""
    if audio == "none":
        return Sound(None, "no sound")
    if audio == "auto":
        return _source_sound(run)
    path = Path(audio).absolute()
    muxed = (run.read_record("soundtrack") or {}).get("path")
    if muxed == str(path) and not path.exists():
        raise UserError(f"{path}, the soundtrack added with mux-audio, is gone; put it back, or assemble "
                        "with --audio auto (the source's sound), --audio none or --audio FILE")
    if not media.has_audio(path):
        raise UserError(f"{path} has no audio stream; give a file with sound, or {{assemble.audio}} none",
                        paths=("assemble.audio",))
    how = "added with mux-audio" if muxed == str(path) else "--audio"
    return Sound(path, f"sound from {path.name} ({how})")


def _source_sound(run: RunFolder) -> Sound:
    src = run.read_record("source") or {}
    path = Path(src.get("path", ""))
    if not src.get("probe", {}).get("has_audio"):
        return Sound(None, "no sound (the source has none)")
    if not path.is_file():
        return Sound(None, "no sound (the source video is gone)",
                     f"the source video {path} is gone, so the video is silent; "
                     f"add sound later with `video2dream mux-audio {run.root} SOUND_FILE`")
    if media.source_changed(src, path):
        raise UserError(f"the source video {path} has changed since it was extracted, so its sound would not "
                        f"fit these pictures; run `video2dream extract {path} -o {run.root} --force`, "
                        "or assemble with --audio none or --audio FILE")
    return Sound(path, f"sound from {path.name} (the source)")


def _video_filters(tl: Timeline, fps: float, transition: str) -> str:
    fit = (f"scale={tl.width}:{tl.height}:force_original_aspect_ratio=increase:flags=lanczos,"
           f"crop={tl.width}:{tl.height},setsar=1")
    if transition == "crossfade":
        # framerate blends neighbours by their distance in time: a fade across the whole interval.
        rate = f"framerate=fps={fps!r}:interp_start=0:interp_end=255:scene=100"
    elif transition == "flow":
        # Motion-compensated interpolation across the whole interval (each picture is one input
        # frame at its time). scd=none: two dreams always differ as much as a scene change, and
        # minterpolate would only repeat frames there. tpad: minterpolate stops at its last input
        # frame, so copies of the last picture carry it to the end (-t cuts the rest).
        rate = (f"tpad=stop_mode=clone:stop_duration=1,minterpolate=fps={fps!r}:mi_mode=mci:mc_mode=aobmc"
                ":me_mode=bidir:vsbmc=1:scd=none")
    else:
        rate = f"fps=fps={fps!r}:round=up"
    return f"{fit},{rate},format=yuv420p"


def _encode(scripts: list[Path], graph: str, audio: Path | None, tl: Timeline, settings: Settings,
            dest: Path, what: str) -> None:
    a = settings.assemble
    # -xerror: a picture that does not decode fails the encode instead of silently dropping out.
    args: list[str] = ["-xerror"]
    for script in scripts:
        # Our own script of absolute paths (-safe 0); only local files may be opened from it.
        args += ["-protocol_whitelist", "file", "-f", "concat", "-safe", "0", "-i", media.arg(script)]
    maps = ["-map", "[v]"]
    if audio is not None:
        # The audio is taken from the same moment of the source as the first frame.
        if tl.source_start > 0:
            args += ["-ss", f"{tl.source_start!r}"]
        args += ["-protocol_whitelist", "file", "-i", media.arg(audio)]
        maps += ["-map", f"{len(scripts)}:a:0", "-c:a", "aac", "-b:a", "192k"]
    args += ["-filter_complex", graph, *maps, "-c:v", "libx264", "-preset", "medium",
             "-crf", str(a.crf), "-pix_fmt", "yuv420p", "-r", f"{a.out_fps!r}",
             "-t", f"{tl.duration:.6f}", "-movflags", "+faststart"]
    total = max(1, round(tl.duration * a.out_fps))
    with atomic_path(dest) as tmp, report.counted(what, total, "frame") as reached:
        def update(block: dict[str, str]) -> None:
            if block.get("frame", "").isdigit():
                reached(int(block["frame"]))

        media.run_ffmpeg([*args, media.arg(tmp)], f"encode {dest.name}", on_progress=update)


@dataclass
class AssemblePlan:
    """What `assemble` would write, and the key that says whether what is there is current."""

    timeline: Timeline
    paths: list[Path]
    frame_paths: list[Path]  # the left half of the side-by-side video, if any
    sound: Sound
    source: str  # --from
    dest: Path
    side_by_side: Path | None
    record: str  # the record of this output (the folder's own video, or a one-off)
    key: str
    times: list[float] = field(default_factory=list)  # when each of paths appears (output seconds)


def plan(run: RunFolder, settings: Settings, output: str | os.PathLike[str] | None = None) -> AssemblePlan:
    """Check the inputs and work out the key of the video, without encoding anything."""
    a = settings.assemble
    tl = timeline(run)
    paths, times = shown_images(run, settings, tl)
    sound = audio_source(run, a.audio)
    default = round_video(run, a.source)
    dest = Path(output or a.output or default)
    if dest.is_dir():
        raise UserError(f"output {dest} is a folder; give a file name such as {dest / 'dream.mp4'}")
    # Side by side is frames | dreams: a remembered --side-by-side never makes a frames | frames check.
    sbs = dest.with_name(f"{dest.stem}_side_by_side{dest.suffix}") if a.side_by_side and a.source != "frames" else None
    for out in (dest, sbs):
        if out is not None:
            check_output(run, out, sound.path)
    frame_paths = image_paths(run, "frames", tl.names) if sbs else []
    key = stable_hash(
        [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths + frame_paths],
        a.source, *key_fields(a).values(), media.fingerprint(sound.path) if sound.path else None,
        tl.duration, times, sbs is not None,
    )
    return AssemblePlan(tl, paths, frame_paths, sound, a.source, dest, sbs, output_record(run, a.source, dest), key,
                        times)


def shown_images(run: RunFolder, settings: Settings, tl: Timeline) -> tuple[list[Path], list[float]]:
    """The pictures of the video and when each appears: the timeline's, or with --transition morph
    the dreams with their in-betweens (morphs/) between them."""
    a = settings.assemble
    if a.transition != "morph":
        return image_paths(run, a.source, tl.names), tl.times
    if a.source != "dreams":
        raise UserError(f"{{assemble.transition}} morph shows the in-betweens of dreams/, not of {a.source}; "
                        "use {assemble.transition} cut or crossfade with {assemble.source} " + a.source,
                        paths=("assemble.transition", "assemble.source"))
    from .morph import interleave

    shown = interleave(run, settings, tl.names, [t + tl.source_start for t in tl.times])
    paths = image_paths(run, "dreams", tl.names)
    morphs = [Path(rel).name for rel, _ in shown if rel.startswith("morphs/")]
    by_name = dict(zip(morphs, image_paths(run, "morphs", morphs), strict=True))
    dreams = dict(zip(tl.names, paths, strict=True))
    out = [by_name[Path(rel).name] if rel.startswith("morphs/") else dreams[Path(rel).name] for rel, _ in shown]
    return out, [t - tl.source_start for _, t in shown]


def output_record(run: RunFolder, source: str, dest: Path) -> str:
    """The record of an output: 'assemble' (or 'assemble-dreams_rNN') for the folder's own video, one
    per path for a one-off `-o`, so that a check never rewrites what is known of dream.mp4."""
    own = "assemble" if source in ("dreams", "frames") else f"assemble-{source}"
    if _same_path(dest, round_video(run, source)):
        return own
    return f"assemble-output-{stable_hash(str(dest.resolve()), length=12)}"


def _same_path(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


def check_output(run: RunFolder, dest: Path, audio: Path | None) -> None:
    """Refuse to write over what the run folder is made from: the source video, the --audio file,
    its tables and settings, or anything in frames/, dreams*/ or .video2dream/."""
    src = (run.read_record("source") or {}).get("path")
    guarded: list[tuple[str, str | Path | None]] = [("the source video", src), ("the --audio file", audio)]
    guarded += [(f"the run folder's {t.name}", t)
                for t in (run.frames_csv, run.settings_file, *run.root.glob("prompts*.csv"))]
    what = next((what for what, path in guarded if path and _same_path(dest, Path(path))), None)
    root, folder = run.root.resolve(), dest.resolve().parent
    if what is None and folder.is_relative_to(root) and folder != root:
        top = folder.relative_to(root).parts[0]
        if top in ("frames", "morphs", STATE) or top.startswith("dreams"):
            what = f"in {run.root / top}"
    if what is not None:
        raise UserError(f"output {dest} is {what}, which this run folder is made from; give another file name")


def record_value(run: RunFolder, path: Path) -> str:
    """A path as records hold it: relative to the run folder when inside it (so that any working
    directory reads it back, and the folder can move), else absolute."""
    full = path.absolute()
    try:
        return str(full.relative_to(run.root.absolute()))
    except ValueError:
        return str(full)


def from_record(run: RunFolder, value: str) -> Path:
    """record_value's path back. Older records held absolute paths, or paths relative to where
    the command ran: a name that is not in the run folder is tried there."""
    path = Path(value)
    if path.is_absolute():
        return path
    inside = run.root / path
    return inside if inside.exists() or not path.exists() else path


def stale_dreams(run: RunFolder, settings: Settings, folders: list[str]) -> tuple[list[str], int, str]:
    """The pictures of dreams/ (and morphs/) in folders that do not carry the key their stage would
    give them now (after a settings or prompt change): (names, how many were checked, the stage to
    run). Only the text chunks are read: assemble has checked that each picture decodes. Dreams not
    made by generate (no prompts.csv) are not judged."""
    from ..pngmeta import read_png_text
    from . import generate as gen

    jobs: list[tuple[Path, str]] = []
    stage = "generate"  # stale dreams come first: their in-betweens are painted from them
    try:
        if "dreams" in folders:
            jobs += [(run.dreams_dir / j.name, j.key) for j in gen.plan(run, settings)[0]]
        if "morphs" in folders:
            from . import morph

            jobs += [(run.morphs_dir / m.name, m.key) for m in morph.plan(run, settings)]
    except UserError:
        return [], 0, stage

    def carries(path: Path, key: str) -> bool:
        try:
            return read_png_text(path).get(gen.KEY_CHUNK) == key
        except (OSError, ValueError):
            return False

    stale = [path for path, key in jobs if not carries(path, key)]
    if stale and all(path.parent == run.morphs_dir for path in stale):
        stage = "morph"  # the dreams are current: only the in-betweens need painting again
    return [path.name for path in stale], len(jobs), stage


def check_pictures(run: RunFolder, settings: Settings, folders: list[str], strict: bool) -> int:
    """Say how many of the video's pictures are stale (refused with strict); their number."""
    stale, total, stage = stale_dreams(run, settings, folders)
    if not stale:
        return 0
    fix = f"run `video2dream {stage} {run.root}` first"
    if strict:
        raise UserError(f"{len(stale)} of the {total} pictures to assemble are stale ({', '.join(stale[:3])}"
                        f"{' ...' if len(stale) > 3 else ''}): {fix}, or assemble without --strict")
    say(f"warning: {len(stale)} of the {total} pictures in this video are stale (made with other settings "
        f"or prompts); {fix}, then assemble again")
    return len(stale)


def assemble(run: RunFolder, settings: Settings, output: str | os.PathLike[str] | None = None,
             force: bool = False, on_ready: Callable[[], None] | None = None,
             strict: bool = False) -> AssembleResult:
    """strict: refuse stale dreams (or in-betweens) instead of warning about them."""
    a = settings.assemble
    p = plan(run, settings, output)
    tl, dest, sbs_dest, audio = p.timeline, p.dest, p.side_by_side, p.sound.path
    shows = [] if a.source != "dreams" else ["dreams", "morphs"] if a.transition == "morph" else ["dreams"]
    stale = check_pictures(run, settings, shows, strict)
    if on_ready:
        on_ready()
    if a.audio == "auto" or str(audio) != (run.read_record("soundtrack") or {}).get("path"):
        run.clear_record("soundtrack")  # another sound chosen: mux-audio's choice is forgotten
    done = run.read_record(p.record)
    outputs_there = dest.is_file() and (sbs_dest is None or sbs_dest.is_file())
    if not force and done and done.get("key") == p.key and outputs_there:
        return AssembleResult(dest, sbs_dest, True, p.sound.says, tl.duration)

    run.ensure()
    if p.sound.warning:
        say(p.sound.warning)
    script = run.state_dir / f"{a.source}.ffconcat"
    with atomic_path(script) as tmp:
        tmp.write_text(concat_script(p.paths, p.times, tl.duration), encoding="utf-8")
    graph = f"[0:v]{_video_filters(tl, a.out_fps, a.transition)}[v]"
    _encode([script], graph, audio, tl, settings, dest, "assemble")
    if sbs_dest is not None:
        left = run.state_dir / "frames-side.ffconcat"
        with atomic_path(left) as tmp:
            tmp.write_text(concat_script(p.frame_paths, tl.times, tl.duration), encoding="utf-8")
        each = _video_filters(tl, a.out_fps, a.transition)
        graph = f"[0:v]{each}[l];[1:v]{each}[r];[l][r]hstack=inputs=2[v]"
        _encode([left, script], graph, audio, tl, settings, sbs_dest, "side by side")
    write_assemble_record(run, p, stale)
    return AssembleResult(dest, sbs_dest, False, p.sound.says, tl.duration)


def write_assemble_record(run: RunFolder, p: AssemblePlan, stale: int = 0) -> None:
    """stale: how many of its pictures were stale when encoded (status judges them afresh)."""
    run.write_record(p.record, {
        "key": p.key, "output": record_value(run, p.dest),
        "side_by_side": record_value(run, p.side_by_side) if p.side_by_side else "",
        "source": p.source, "audio": str(p.sound.path) if p.sound.path else None, "sound": p.sound.says,
        "duration": p.timeline.duration, **({"stale_pictures": stale} if stale else {}),
    })


# -- telephone: one video per round, the rounds side by side, and still-image slideshows ---------


def round_folder(round_number: int) -> str:
    """The dreams folder of a telephone round: round 1 is the ordinary dreams/."""
    if round_number < 1:
        raise UserError(f"--round must be >= 1, got {round_number}")
    return "dreams" if round_number == 1 else f"dreams_r{round_number:02d}"


def round_video(run: RunFolder, source: str) -> Path:
    """Default output: dream.mp4 for dreams/ (and frames/), dream_rNN.mp4 for dreams_rNN/."""
    return run.root / f"dream_{source[len('dreams_'):]}.mp4" if source.startswith("dreams_") else run.video


def round_folders(run: RunFolder) -> list[str]:
    """dreams, dreams_r02, dreams_r03, ... as far as they go without a gap."""
    found = []
    k = 1
    while (run.root / round_folder(k)).is_dir():
        found.append(round_folder(k))
        k += 1
    return found


def grid_layout(count: int, width: int, height: int, max_width: int = 3840) -> tuple[int, int, int, int]:
    """(columns, rows, tile width, tile height): one row up to 4 tiles, else a near-square grid;
    tiles keep the source's aspect, shrunk so the whole grid is at most max_width wide, even sides."""
    import math

    cols = count if count <= 4 else math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    scale = min(1.0, max_width / (cols * width))
    return cols, rows, max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


@dataclass
class GridPlan:
    timeline: Timeline
    folders: list[str]
    paths: dict[str, list[Path]]
    sound: Sound
    dest: Path
    layout: tuple[int, int, int, int]  # columns, rows, tile width, tile height
    record: str
    key: str


def grid_plan(run: RunFolder, settings: Settings, output: str | os.PathLike[str] | None = None,
              rounds: int | None = None) -> GridPlan:
    a = settings.assemble
    tl = timeline(run)
    folders = ["frames", *round_folders(run)[:rounds]]
    if len(folders) < 2:
        raise UserError(f"{run.root} has no dreams yet; run `video2dream generate` or `video2dream telephone` first")
    paths = {f: image_paths(run, f, tl.names) for f in folders}
    sound = audio_source(run, a.audio)
    default = run.root / "dream_grid.mp4"
    dest = Path(output or a.output or default)
    if dest.is_dir():
        raise UserError(f"output {dest} is a folder; give a file name such as {dest / 'dream_grid.mp4'}")
    check_output(run, dest, sound.path)
    layout = grid_layout(len(folders), tl.width, tl.height)
    key = stable_hash(
        [(p.parent.name, p.name, p.stat().st_size, p.stat().st_mtime_ns) for ps in paths.values() for p in ps],
        *key_fields(a).values(), media.fingerprint(sound.path) if sound.path else None,
        tl.duration, tl.times, *layout,
    )
    record = "assemble-grid" if _same_path(dest, default) else \
        f"assemble-output-{stable_hash(str(dest.resolve()), length=12)}"
    return GridPlan(tl, folders, paths, sound, dest, layout, record, key)


def assemble_grid(run: RunFolder, settings: Settings, output: str | os.PathLike[str] | None = None,
                  force: bool = False, on_ready: Callable[[], None] | None = None,
                  rounds: int | None = None, strict: bool = False) -> AssembleResult:
    """RUN/dream_grid.mp4: the frames, then every telephone round (or the first `rounds`), side by
    side (left to right, then top to bottom when there are more than four), with the source's sound."""
    a = settings.assemble
    p = grid_plan(run, settings, output, rounds)
    tl, folders, dest, audio = p.timeline, p.folders, p.dest, p.sound.path
    cols, rows, tw, th = p.layout
    check_pictures(run, settings, ["dreams"], strict)
    if on_ready:
        on_ready()
    done = run.read_record(p.record)
    if not force and done and done.get("key") == p.key and dest.is_file():
        return AssembleResult(dest, None, True, p.sound.says, tl.duration)
    run.ensure()
    if p.sound.warning:
        say(p.sound.warning)
    scripts = []
    for f in folders:
        script = run.state_dir / f"grid-{f}.ffconcat"
        with atomic_path(script) as tmp:
            tmp.write_text(concat_script(p.paths[f], tl.times, tl.duration), encoding="utf-8")
        scripts.append(script)
    tile = Timeline(tl.names, tl.times, tl.duration, tl.source_start, tw, th)
    each = _video_filters(tile, a.out_fps, a.transition)
    graph = "".join(f"[{n}:v]{each}[t{n}];" for n in range(len(folders)))
    labels = "".join(f"[t{n}]" for n in range(len(folders)))
    if rows == 1:
        graph += f"{labels}hstack=inputs={len(folders)}[v]"
    else:
        cells = "|".join(f"{(n % cols) * tw}_{(n // cols) * th}" for n in range(len(folders)))
        graph += f"{labels}xstack=inputs={len(folders)}:layout={cells}:fill=black[v]"
    _encode(scripts, graph, audio, tl, settings, dest, "grid")
    run.write_record(p.record, {"key": p.key, "output": record_value(run, dest), "folders": folders,
                                "sound": p.sound.says, "duration": tl.duration})
    return AssembleResult(dest, None, False, p.sound.says, tl.duration)


def slideshow(paths: list[Path], hold: float, crossfade: float, width: int, height: int, dest: Path,
              settings: Settings, script: Path) -> float:
    """Still images, each shown `hold` seconds, the last `crossfade` seconds of each fading into the
    next (0: cuts), no sound, scaled to cover width x height (made even) -> dest. Returns seconds."""
    times: list[float] = []
    shown: list[Path] = []
    for k, path in enumerate(paths):
        times.append(k * hold)
        shown.append(path)
        if crossfade > 0 and k < len(paths) - 1:
            # The same picture again where the fade starts: the blend between two copies of one
            # picture is that picture, so it holds still until then, then fades into the next.
            times.append((k + 1) * hold - crossfade)
            shown.append(path)
    duration = len(paths) * hold
    tl = Timeline([p.name for p in shown], times, duration, 0.0, max(2, width // 2 * 2), max(2, height // 2 * 2))
    with atomic_path(script) as tmp:
        tmp.write_text(concat_script(shown, times, duration), encoding="utf-8")
    graph = f"[0:v]{_video_filters(tl, settings.assemble.out_fps, 'crossfade' if crossfade > 0 else 'cut')}[v]"
    _encode([script], graph, None, tl, settings, dest, dest.name)
    return duration


@dataclass
class MuxResult:
    videos: list[Path]
    settings: Settings  # the folder's settings with its soundtrack: save them
    sound: str


def mux_audio(run: RunFolder, settings: Settings, source: str | os.PathLike[str]) -> MuxResult:
    """Add or replace the soundtrack of dream.mp4 (and its side-by-side video) without re-encoding
    the picture. The sound becomes the folder's: later `assemble`s keep it (assemble.audio is its
    absolute path, or 'auto' for the source video itself), until `--audio auto` or another choice."""
    video = run.video
    if not video.is_file():
        raise UserError(f"{video} does not exist yet; run `video2dream assemble {run.root}` first")
    source = Path(source).resolve()  # saved for later assembles: the same file from any directory
    record = run.read_record("assemble") or {}
    side = from_record(run, record["side_by_side"]) if record.get("side_by_side") else None
    videos = [v for v in (video, side) if v is not None and v.is_file()]
    if any(_same_path(source, v) for v in videos):
        raise UserError(f"{source} is the video whose sound would be replaced; give another file with sound")
    if not media.has_audio(source):
        raise UserError(f"{source} has no audio stream; give a file with sound")
    was_current = _current_plan(run, settings, record)
    src = run.read_record("source") or {}
    is_source = bool(src.get("path")) and _same_path(source, Path(src["path"])) \
        and not media.source_changed(src, source)
    # The files and the records change together: what is about to happen is recorded first, so that
    # a command killed between them leaves a `mux-pending` the next command settles (mend_mux).
    run.write_record(MUX_PENDING, {
        "sound": str(source), "audio": "auto" if is_source else str(source),
        "soundtrack": None if is_source else {"path": str(source), "fingerprint": media.fingerprint(source)},
        "was_current": was_current.source if was_current else None,
        "videos": [{"path": record_value(run, v), **_stamp(v)} for v in videos]})
    for v in videos:
        _mux(run, v, source)
    settings = finish_mux(run, settings, run.read_record(MUX_PENDING) or {})
    return MuxResult(videos, settings, audio_source(run, settings.assemble.audio).says)


MUX_PENDING = "mux-pending"  # cleared once the settings hold the new sound too (pipeline.do_mux_audio)


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def finish_mux(run: RunFolder, settings: Settings, pending: dict) -> Settings:
    """The records of a mux-audio whose files are written: its soundtrack, and dream.mp4's record if
    the video was current (it still is, now with this sound). The settings to save."""
    if pending.get("soundtrack"):
        run.write_record("soundtrack", pending["soundtrack"])
    else:
        run.clear_record("soundtrack")
    settings = replace_section(settings, "assemble", audio=pending["audio"])
    if pending.get("was_current"):  # say so to the next assemble
        # UserError: something else changed since; the video is stale, as the old record says
        with contextlib.suppress(UserError):
            write_assemble_record(run, plan(run, replace_section(settings, "assemble", source=pending["was_current"])))
    return settings


def mend_mux(run: RunFolder, settings: Settings) -> tuple[Settings | None, str]:
    """A mux-audio killed part way: its videos are checked against what they were before it. None
    replaced: nothing happened (None). All: its records are written (the settings to save). Some:
    the rest get the sound too, then the records; if the sound file is gone, dream.mp4's record is
    dropped, so that the next assemble encodes it again. With a line for the user."""
    pending = run.read_record(MUX_PENDING) or {}
    videos = [(from_record(run, v["path"]), v) for v in pending.get("videos", [])]
    replaced = [p for p, v in videos if p.is_file() and _stamp(p) != {"size": v["size"], "mtime_ns": v["mtime_ns"]}]
    if not replaced:
        return None, "mux-audio was stopped before it changed a video: nothing to finish"
    sound = Path(pending["sound"])
    if len(replaced) < len(videos) and not sound.is_file():
        run.clear_record("assemble")
        return None, (f"mux-audio was stopped part way and {sound} is gone: {run.video.name} will be "
                      "encoded again by the next assemble")
    for p, _ in videos:
        if p not in replaced and p.is_file():
            _mux(run, p, sound)
    return finish_mux(run, settings, pending), f"mux-audio of {sound} was stopped part way: finished it"


def _current_plan(run: RunFolder, settings: Settings, record: dict) -> AssemblePlan | None:
    """The plan of dream.mp4 as last assembled, if it is still current."""
    if not record.get("key"):
        return None
    try:
        p = plan(run, replace_section(settings, "assemble", source=record.get("source", "dreams"), output=None))
    except UserError:
        return None
    return p if p.key == record["key"] and p.record == "assemble" else None


def _mux(run: RunFolder, video: Path, source: Path) -> None:
    duration = media.probe(video).duration
    done = run.read_record("extract") or {}
    seek = ["-ss", f"{float(done['start'])!r}"] if float(done.get("start") or 0) > 0 else []
    args = ["-i", media.arg(video), *seek, "-protocol_whitelist", "file", "-i", media.arg(source),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "192k",
            "-t", f"{duration:.6f}", "-movflags", "+faststart"]
    with atomic_path(video) as tmp:
        media.run_ffmpeg([*args, media.arg(tmp)], f"add the sound of {source} to {video.name}")
