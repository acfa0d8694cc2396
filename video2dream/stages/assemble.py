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

    base = run.dreams_dir if folder == "dreams" else run.frames_dir
    paths = [base / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        fix = ("run `video2dream generate` first, or assemble the frames with --from frames"
               if folder == "dreams" else "run `video2dream extract` again")
        raise UserError(f"{len(missing)} of {len(paths)} images missing in {base}: {shown}; {fix}")
    for p in paths:
        try:
            with Image.open(p) as im:
                im.verify()
        except Exception:
            raise UserError(f"{p} is not a readable image (corrupt or cut short); delete it and "
                            f"run `video2dream {'generate' if folder == 'dreams' else 'extract'}` again") from None
    return paths


def _quote(path: Path) -> str:
    return "'" + str(path.resolve()).replace("'", "'\\''") + "'"


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
    dest = Path(output or a.output or run.video)
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
    done = run.read_record("assemble")
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
    run.write_record("assemble", {"key": key, "output": str(dest), "side_by_side": str(sbs_dest or ""),
                                  "source": a.source, "audio": str(audio) if audio else None,
                                  "duration": tl.duration})
    return AssembleResult(dest, sbs_dest, False, str(audio) if audio else None, tl.duration)


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
