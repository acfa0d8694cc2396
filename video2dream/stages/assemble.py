"""assemble: dreams/ (or frames/) + frames.csv (+ audio) -> dream.mp4, and mux-audio.

Each image is held from its own timestamp to the next one's (ffmpeg's concat demuxer with a duration
per image), so the picture keeps time with the source and its soundtrack. The output is the source's
display size; images of another size are scaled to cover it and centre-cropped (never stretched).
The audio is cut to the picture: a longer soundtrack never makes the last image hang on screen.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import media
from ..errors import UserError
from ..progress import progress_bar, say
from ..runfolder import RunFolder, atomic_path
from ..settings import Settings, stable_hash
from ..tables import read_frames


@dataclass
class AssembleResult:
    output: Path
    side_by_side: Path | None
    skipped: bool
    audio: str | None  # where the soundtrack came from, None when silent
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
    times = [t - start for t in df["time"].tolist()]
    if times[-1] >= end - start:  # a frame sampled at the very end still gets one output frame
        end = start + times[-1] + 1.0 / float(done["fps"])
    width, height = int(done["width"]) // 2 * 2, int(done["height"]) // 2 * 2
    return Timeline(df["filename"].tolist(), times, end - start, start, max(width, 2), max(height, 2))


def image_paths(run: RunFolder, folder: str, names: list[str]) -> list[Path]:
    """The images to show, checked: every one present and a readable picture."""
    from PIL import Image

    base = run.root / folder  # frames, dreams, or a telephone round's dreams_rNN
    paths = [base / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        fix = ("run `video2dream generate` first, or assemble the frames with --from frames"
               if folder == "dreams" else "run `video2dream extract` again" if folder == "frames"
               else f"run `video2dream telephone VIDEO -o {run.root}` again to finish that round")
        raise UserError(f"{len(missing)} of {len(paths)} images missing in {base}: {shown}; {fix}")
    for p in paths:
        try:
            with Image.open(p) as im:
                im.verify()
        except Exception:
            raise UserError(f"{p} is not a readable image (corrupt or cut short); delete it and "
                            f"run `video2dream {'extract' if folder == 'frames' else 'generate'}` again") from None
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


def concat_script(paths: list[Path], times: list[float], duration: float) -> str:
    """An ffconcat script holding each image until the next one's time, the last until the end."""
    lines = ["ffconcat version 1.0"]
    ends = times[1:] + [duration]
    for path, start, stop in zip(paths, times, ends, strict=True):
        lines += [f"file {_quote(path)}", f"duration {max(stop - start, 1e-3):.6f}"]
    lines.append(f"file {_quote(paths[-1])}")  # the demuxer ignores the last entry's duration
    return "\n".join(lines) + "\n"


def audio_source(run: RunFolder, audio: str) -> Path | None:
    """Which file's first audio stream to use: None for silence."""
    if audio == "none":
        return None
    if audio == "auto":
        src = run.read_record("source") or {}
        path = Path(src.get("path", ""))
        if not src.get("probe", {}).get("has_audio"):
            return None
        if not path.is_file():
            say(f"the source video {path} is gone, so dream.mp4 is silent; "
                "add sound later with `video2dream mux-audio RUN_DIR SOURCE`")
            return None
        return path
    path = Path(audio)
    if not media.has_audio(path):
        raise UserError(f"{path} has no audio stream; give a file with sound, or --audio none")
    return path


def _video_filters(tl: Timeline, fps: float, transition: str) -> str:
    fit = (f"scale={tl.width}:{tl.height}:force_original_aspect_ratio=increase:flags=lanczos,"
           f"crop={tl.width}:{tl.height},setsar=1")
    if transition == "crossfade":
        # framerate blends neighbours by their distance in time: a fade across the whole interval.
        rate = f"framerate=fps={fps!r}:interp_start=0:interp_end=255:scene=100"
    else:
        rate = f"fps=fps={fps!r}:round=up"
    return f"{fit},{rate},format=yuv420p"


def _encode(scripts: list[Path], graph: str, audio: Path | None, tl: Timeline, settings: Settings,
            dest: Path, what: str) -> None:
    a = settings.assemble
    args: list[str] = []
    for script in scripts:
        args += ["-f", "concat", "-safe", "0", "-i", str(script)]
    maps = ["-map", "[v]"]
    if audio is not None:
        # The audio is taken from the same moment of the source as the first frame.
        if tl.source_start > 0:
            args += ["-ss", f"{tl.source_start!r}"]
        args += ["-i", str(audio)]
        maps += ["-map", f"{len(scripts)}:a:0", "-c:a", "aac", "-b:a", "192k"]
    args += ["-filter_complex", graph, *maps, "-c:v", "libx264", "-preset", "medium",
             "-crf", str(a.crf), "-pix_fmt", "yuv420p", "-r", f"{a.out_fps!r}",
             "-t", f"{tl.duration:.6f}", "-movflags", "+faststart"]
    total = max(1, round(tl.duration * a.out_fps))
    with atomic_path(dest) as tmp, progress_bar(total=total, desc=what, unit="frame") as bar:
        def update(block: dict[str, str]) -> None:
            if block.get("frame", "").isdigit():
                bar.update(min(total, int(block["frame"])) - bar.n)

        media.run_ffmpeg([*args, str(tmp)], f"encode {dest.name}", on_progress=update)


def assemble(run: RunFolder, settings: Settings, output: str | os.PathLike[str] | None = None,
             force: bool = False, on_ready: Callable[[], None] | None = None) -> AssembleResult:
    a = settings.assemble
    tl = timeline(run)
    paths = image_paths(run, a.source, tl.names)
    audio = audio_source(run, a.audio)
    dest = Path(output or a.output or round_video(run, a.source))
    if dest.is_dir():
        raise UserError(f"output {dest} is a folder; give a file name such as {dest / 'dream.mp4'}")
    sbs_dest = dest.with_name(f"{dest.stem}_side_by_side{dest.suffix}") if a.side_by_side else None
    frame_paths = image_paths(run, "frames", tl.names) if sbs_dest else []
    key = stable_hash(
        [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths + frame_paths],
        a.source, a.transition, a.out_fps, a.crf, str(dest.resolve()),
        media.fingerprint(audio) if audio else None, tl.duration,
    )
    if on_ready:
        on_ready()
    record = "assemble" if a.source in ("dreams", "frames") else f"assemble-{a.source}"
    done = run.read_record(record)
    outputs_there = dest.is_file() and (sbs_dest is None or sbs_dest.is_file())
    if not force and done and done.get("key") == key and outputs_there:
        return AssembleResult(dest, sbs_dest, True, str(audio) if audio else None, tl.duration)

    run.ensure()
    script = run.state_dir / f"{a.source}.ffconcat"
    with atomic_path(script) as tmp:
        tmp.write_text(concat_script(paths, tl.times, tl.duration), encoding="utf-8")
    graph = f"[0:v]{_video_filters(tl, a.out_fps, a.transition)}[v]"
    _encode([script], graph, audio, tl, settings, dest, "assemble")
    if sbs_dest is not None:
        left = run.state_dir / "frames-side.ffconcat"
        with atomic_path(left) as tmp:
            tmp.write_text(concat_script(frame_paths, tl.times, tl.duration), encoding="utf-8")
        each = _video_filters(tl, a.out_fps, a.transition)
        graph = f"[0:v]{each}[l];[1:v]{each}[r];[l][r]hstack=inputs=2[v]"
        _encode([left, script], graph, audio, tl, settings, sbs_dest, "side by side")
    run.write_record(record, {"key": key, "output": str(dest), "side_by_side": str(sbs_dest or ""),
                                  "source": a.source, "audio": str(audio) if audio else None,
                                  "duration": tl.duration})
    return AssembleResult(dest, sbs_dest, False, str(audio) if audio else None, tl.duration)


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


def assemble_grid(run: RunFolder, settings: Settings, output: str | os.PathLike[str] | None = None,
                  force: bool = False, on_ready: Callable[[], None] | None = None,
                  rounds: int | None = None) -> AssembleResult:
    """RUN/dream_grid.mp4: the frames, then every telephone round (or the first `rounds`), side by
    side (left to right, then top to bottom when there are more than four), with the source's sound."""
    a = settings.assemble
    tl = timeline(run)
    folders = ["frames", *round_folders(run)[:rounds]]
    if len(folders) < 2:
        raise UserError(f"{run.root} has no dreams yet; run `video2dream generate` or `video2dream telephone` first")
    paths = {f: image_paths(run, f, tl.names) for f in folders}
    audio = audio_source(run, a.audio)
    dest = Path(output or a.output or run.root / "dream_grid.mp4")
    if dest.is_dir():
        raise UserError(f"output {dest} is a folder; give a file name such as {dest / 'dream_grid.mp4'}")
    cols, rows, tw, th = grid_layout(len(folders), tl.width, tl.height)
    key = stable_hash(
        [(p.parent.name, p.name, p.stat().st_size, p.stat().st_mtime_ns) for ps in paths.values() for p in ps],
        a.transition, a.out_fps, a.crf, str(dest.resolve()), media.fingerprint(audio) if audio else None,
        tl.duration, cols, rows, tw, th,
    )
    if on_ready:
        on_ready()
    done = run.read_record("assemble-grid")
    if not force and done and done.get("key") == key and dest.is_file():
        return AssembleResult(dest, None, True, str(audio) if audio else None, tl.duration)
    run.ensure()
    scripts = []
    for f in folders:
        script = run.state_dir / f"grid-{f}.ffconcat"
        with atomic_path(script) as tmp:
            tmp.write_text(concat_script(paths[f], tl.times, tl.duration), encoding="utf-8")
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
    run.write_record("assemble-grid", {"key": key, "output": str(dest), "folders": folders,
                                       "duration": tl.duration})
    return AssembleResult(dest, None, False, str(audio) if audio else None, tl.duration)


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


def mux_audio(run: RunFolder, source: str | os.PathLike[str], video: Path | None = None) -> Path:
    """Add or replace the soundtrack of dream.mp4 without re-encoding the picture."""
    video = video or run.video
    if not video.is_file():
        raise UserError(f"{video} does not exist yet; run `video2dream assemble {run.root}` first")
    source = Path(source)
    if not media.has_audio(source):
        raise UserError(f"{source} has no audio stream; give a file with sound")
    duration = media.probe(video).duration
    done = run.read_record("extract") or {}
    seek = ["-ss", f"{float(done['start'])!r}"] if float(done.get("start") or 0) > 0 else []
    args = ["-i", str(video), *seek, "-i", str(source), "-map", "0:v:0", "-map", "1:a:0",
            "-c:v", "copy", "-c:a", "aac", "-b:a", "192k", "-t", f"{duration:.6f}",
            "-movflags", "+faststart"]
    with atomic_path(video) as tmp:
        media.run_ffmpeg([*args, str(tmp)], f"add the sound of {source} to {video.name}")
    return video
