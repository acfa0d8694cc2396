"""extract: VIDEO -> frames/NNNNNN.png + frames.csv, one frame per 1/fps seconds of source time.

ffmpeg's fps filter with round=up gives, for each sample time t, the last frame whose presentation
timestamp is <= t (the frame a player shows at t); start_time pads the start when the picture begins
late. -copyts keeps the source timestamps, so seeking with --start never drops the frame on screen.
The timestamps are shifted so the first sample is at 0 (setpts) rather than passing the start to the
fps filter: the filter checks end-of-stream on the unshifted 1/fps grid, which loses the last samples
(all of them for --start 2.9 on a 3 s clip) when the start is not a multiple of 1/fps.

With --at beats or --scene-cuts the keyframes are at any times (video2dream.timing): setpts maps
the k-th time to k seconds (piecewise linear, increasing), and the same fps filter at 1 fps takes
for each the frame on screen then. frames.csv says what each keyframe is (tick, beat or cut).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from .. import media, report, timing
from ..errors import SettingError, UserError
from ..progress import say
from ..runfolder import OWN_PICTURES, RunFolder, raise_write_error, replace, temp_path
from ..settings import Settings, key_fields, stable_hash
from ..tables import FRAME_NAME, frames_table, read_frames

# Demuxers whose seek lands on a keyframe at or before the wanted time (they keep an index). Others
# (MPEG-TS and PS, raw streams) may land past it, so the frames before the next keyframe would be
# lost and later ones shown in their place: for those, decode from the beginning instead.
SEEKS_TO_KEYFRAMES = ("mov,", "matroska", "avi")


@dataclass
class ExtractResult:
    frames: int
    skipped: bool
    width: int
    height: int


def sample_times(start: float, end: float, fps: float) -> list[float]:
    """Sample times start, start + 1/fps, ... before end; at least one."""
    return timing.ticks(start, end, fps)


def extract_key(fingerprint: str, ex, start: float, end: float) -> str:
    """The key of the frames: the video, the key settings, start and end as they apply. --every
    counts beats: with --at seconds it changes nothing, so it is not in the key then."""
    fields = key_fields(ex)
    if ex.at != "beats":
        fields.pop("every", None)
    return stable_hash(fingerprint, *fields.values(), start, end)


def check_same_source(run: RunFolder, video: Path, fingerprint: str, force: bool) -> bool:
    """Whether run holds the work of another video (or of this path before the file changed);
    refused unless force."""
    previous = run.read_record("source")
    other = bool(previous) and (previous.get("fingerprint") != fingerprint or media.source_changed(previous, video))
    if other and not force:
        same_path = previous.get("path") == str(video)
        what = f"{video} has changed since it was extracted" if same_path else \
            f"it holds the frames of another video ({previous.get('path')})"
        raise UserError(f"{run.root}: {what}; use a new run folder, or add --force to start this one over")
    return other


# What a run folder holds that was made from its video; --force with another video removes it all,
# so no prompt, dream or video of the old one can pass for the new one's. Exactly the names the tool
# makes: a user's dreams_review/ or dreamy_song.mp4 is not one of them (nor dreams_r٠١/: ASCII digits).
DERIVED = re.compile(r"prompts(_r[0-9]{2,})?\.csv|truncated\.csv|refused\.csv|dreams(_r[0-9]{2,})?|morphs|variants"
                     r"|dream(_r[0-9]{2,})?(_side_by_side)?\.mp4|dream_grid\.mp4|drift\.(csv|png)")


def start_over(run: RunFolder) -> None:
    for path in run.root.iterdir():
        if not DERIVED.fullmatch(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            _remove_own(path, OWN_PICTURES)  # a file of the user's in dreams/ stays, and so does the folder
        else:
            path.unlink()
    for record in run.state_dir.glob("*.json"):
        if record.stem not in ("source", "settings"):
            record.unlink()


def extract(run: RunFolder, video: str | os.PathLike[str], settings: Settings, force: bool = False,
            on_ready: Callable[[], None] | None = None, allow_damaged: bool = False) -> ExtractResult:
    """allow_damaged: extract what can be read of a damaged video (with a warning naming the seconds
    affected) instead of refusing it. Per call, never saved: it is consent for this file."""
    video = Path(video)
    probe = media.probe(video)  # fails before anything in the run folder is touched
    ex = settings.extract
    if ex.at == "beats" and not probe.has_audio:
        raise UserError(f"{video} has no sound, so {{extract.at}} beats has no beats to follow; use {{extract.at}} "
                        "seconds, or give a video with a soundtrack", paths=("extract.at",))
    fingerprint = media.fingerprint(video)
    whole = media.content(video)  # before ffmpeg reads it: a change meanwhile shows next time
    other_video = check_same_source(run, video, fingerprint, force)
    start = ex.start or 0.0
    end = min(ex.end, probe.duration) if ex.end is not None else probe.duration
    if start >= probe.duration:
        raise SettingError("extract.start", f"{start} is past the end of {video} ({probe.duration:.2f} s)")
    if ex.end is not None and ex.end > probe.duration + 1e-3:  # a warning: the frames simply stop at the end
        say(f"warning: --end {ex.end:g} is past the end of {video.name} ({probe.duration:.2f} s); "
            f"frames are taken up to {probe.duration:.2f} s")
    if probe.fps and ex.fps > probe.fps * 1.01:  # not refused: a saved --fps must not fail the next video
        say(f"--fps {ex.fps:g} is above the frame rate of {video.name} ({probe.fps:g} fps): frames will repeat")
    key = extract_key(fingerprint, ex, start, end)
    done = run.read_record("extract")
    current = not force and not other_video and bool(done) and done.get("key") == key \
        and _frames_present(run, done.get("frames", 0))
    # The beats and cuts are found before anything is saved: a soundtrack without beats fails cleanly.
    wanted = [] if current else timing.keyframes(video, probe, ex, start, end)
    if on_ready:
        on_ready()
    if current:
        _adopt_content(run, video)
        return ExtractResult(done["frames"], True, done["width"], done["height"])

    stream_end, unreadable = media.read_through(video)  # a file cut short, before any decoding
    run.ensure()
    run.remove_temporaries()
    work = temp_path(run.frames_dir)  # in .video2dream/tmp/: no name a user could have chosen
    work.mkdir()
    try:
        uniform = ex.at == "seconds" and not ex.scene_cuts  # today's fps grid, exactly as before
        errors = _run_ffmpeg(video, work, probe, start, ex.fps, [k.time for k in wanted], uniform)
        names = _numbered_frames(work, len(wanted), video)
        damage = _damage(video, probe, (start, end), (stream_end, unreadable), errors, [k.time for k in wanted],
                         len(names))
        if damage and not allow_damaged:
            raise UserError(f"{video} is damaged: {damage}; no frames were taken from it: "
                            "repair or re-encode the video, or add --allow-damaged to extract what can be read")
        if damage:
            say(f"warning: {video} is damaged: {damage}; the frames there show the nearest picture "
                "that could be read")
        if other_video:  # only once the new frames are good: a refused video leaves the old work
            start_over(run)
        # ffmpeg may stop a frame short of the last sample when the picture ends early.
        wanted = wanted[: len(names)]
        from PIL import Image

        with Image.open(work / names[0]) as first:
            width, height = first.size
        _swap_in(run, work, frames_table(names, [k.time for k in wanted], [k.kind for k in wanted]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run.write_record("source", {"path": probe.path, "fingerprint": fingerprint, "content": whole,
                                "probe": probe.to_dict()})
    run.write_record("extract", {"key": key, "frames": len(names), "width": width, "height": height,
                                 "fps": ex.fps, "start": start, "end": end, "at": ex.at,
                                 "cuts": sum(k.kind == timing.CUT for k in wanted),
                                 **({"damaged": damage} if damage else {})})
    return ExtractResult(len(names), False, width, height)


def _damage(video: Path, probe: media.Probe, span: tuple[float, float], read: tuple[float, list[str]],
            errors: list[str], times: list[float], got: int) -> str | None:
    """What is wrong with the picture stream between span's start and end, seconds named; None when
    nothing is. read: where reading every packet ended and what could not be read; errors: what the
    extraction could not decode; got of the len(times) frames wanted were made."""
    start, end = span
    stream_end, unreadable = read
    step = 1.0 / probe.fps if probe.fps else 0.1
    found = []
    # The last packet starts a frame or two before the end; a container longer than its picture (a
    # longer soundtrack) is not damage unless ffmpeg also found the file short of what it promises.
    if unreadable and stream_end < end - max(3 * step, 0.25):
        found.append(f"its picture stops at {stream_end:.2f} s of {end:.2f} s")
    if errors or (unreadable and not found):
        decoded = [t - probe.start for t in media.decoded_times(video)]
        gaps = [(a, b) for a, b in zip(decoded, decoded[1:], strict=False) if b - a > 1.5 * step and b > start
                and a < end]
        if gaps:
            where = ", ".join(f"{a + step:.2f}-{b:.2f} s" for a, b in gaps[:5])
            found.append(f"pictures could not be decoded at {where}")
        elif not found:
            found.append("some pictures did not decode (ffmpeg does not say at which seconds)")
    # One short, or short by less than a second: the picture may end a little before the sound.
    if got < len(times) - 1 and end - times[got - 1] > max(1.0, 3 * step) and not found:
        found.append(f"no picture after {times[got - 1]:.2f} s of {end:.2f} s")
    return f"{'; '.join(found)} ({_ffmpeg_words(errors or unreadable)})" if found else None


def _ffmpeg_words(lines: list[str]) -> str:
    """ffmpeg's first complaint, without its '[h264 @ 0x...]' prefixes, cut short."""
    if not lines:
        return "ffmpeg gave fewer frames than asked"
    text = re.sub(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", lines[0]).strip().rstrip(".")
    return "ffmpeg: " + (text[:100] + "..." if len(text) > 100 else text)


def _adopt_content(run: RunFolder, video: Path) -> None:
    """A source record from before `content` (first and last MiB only), or one whose file was touched
    without a change: record what the file holds now, which the check just found to be the same."""
    src = run.read_record("source") or {}
    st = video.stat()
    c = src.get("content") or {}
    if (c.get("size"), c.get("mtime_ns")) != (st.st_size, st.st_mtime_ns):
        run.write_record("source", {**src, "content": media.content(video)})


def _numbered_frames(work: Path, wanted: int, video: Path) -> list[str]:
    """The frames ffmpeg wrote: exactly 000001.png ... N.png, N <= wanted, nothing else. Anything
    else (a gap, an extra file) means something besides this ffmpeg wrote or deleted files there,
    and the frames would be matched to the wrong times."""
    names = sorted(os.listdir(work))
    if not names:
        raise UserError(f"ffmpeg gave no frames for {video}; is the picture stream empty?")
    expected = [f"{k:06d}.png" for k in range(1, len(names) + 1)]
    if names != expected or len(names) > wanted:
        odd = next((n for n, e in zip(names, expected, strict=True) if n != e), names[-1])
        raise UserError(f"the frames extracted into {work} are not 000001.png ... {len(names):06d}.png in order "
                        f"(found {odd}); another program changed that folder: extract again")
    return names


def _frames_present(run: RunFolder, count: int) -> bool:
    if count <= 0 or not all((run.frames_dir / f"{i:06d}.png").is_file() for i in (1, count)):
        return False
    try:
        return len(read_frames(run.frames_csv)) == count
    except UserError:  # frames.csv deleted or broken by hand: extract again
        return False


# Longer filter text goes through a file (`-/vf FILE`, ffmpeg 7 or newer): one argument may hold 128 KiB.
LONG_FILTER = 100_000


def _run_ffmpeg(video: Path, out_dir: Path, probe: media.Probe, start: float, fps: float, times: list[float],
                uniform: bool) -> list[str]:
    """The frame on screen at each of times (uniform: the 1/fps grid from start, as times are)."""
    # Timestamps are rounded (Matroska keeps whole milliseconds), so a frame may be stamped a bit
    # after the instant it belongs to: count frames as on screen a little before their timestamps,
    # or sampling at the source's own rate would repeat some frames and skip others.
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    slack = min(0.001, 0.25 / fps if uniform else min(gaps, default=1.0) / 4, 0.25 / probe.fps if probe.fps else 1.0)
    offset = probe.start + start + slack
    filters = [f"setpts=PTS-({offset:.9f})/TB"]
    if uniform:
        filters.append(f"fps=fps={fps!r}:start_time=0:round=up")
    else:  # the k-th time becomes k seconds: the same filter then takes the frame on screen at each
        filters += [f"setpts='({timing.warp([t - start for t in times])})/TB'", "fps=fps=1:start_time=0:round=up"]
    if abs(probe.sar - 1.0) > 1e-3:
        filters.append("scale='round(iw*sar/2)*2':ih,setsar=1")  # square pixels
    args = []
    if start > 0 and probe.format.startswith(SEEKS_TO_KEYFRAMES):
        args += ["-ss", f"{start!r}", "-noaccurate_seek"]
    graph = ",".join(filters)
    with tempfile.TemporaryDirectory() as tmp:
        vf = ["-vf", graph]
        if len(graph) > LONG_FILTER:
            script = Path(tmp) / "filters.txt"
            script.write_text(graph, encoding="utf-8")
            vf = ["-/vf", str(script)]
        # Absolute paths, the folder's '%' escaped: exactly these files, whatever the names (issue 9).
        # 0:V is the first video stream that is not cover art (an attached picture).
        args += ["-copyts", "-i", media.arg(video), "-map", "0:V:0", *vf,
                 "-frames:v", str(len(times)), "-pix_fmt", "rgb24", "-start_number", "1",
                 media.image_pattern(out_dir, "%06d.png")]
        return _ffmpeg_frames(args, len(times), video, out_dir)


def _ffmpeg_frames(args: list[str], count: int, video: Path, out_dir: Path) -> list[str]:
    with report.counted("extract", count, "frame") as reached:
        def update(block: dict[str, str]) -> None:
            if block.get("frame", "").isdigit():
                reached(int(block["frame"]))

        return media.run_ffmpeg(args, f"extract frames from {video} into {out_dir.parent / 'frames'}",
                                on_progress=update)


def _swap_in(run: RunFolder, work: Path, table) -> None:
    """Move the new frames into frames/ and write frames.csv; the extract record is written last.

    frames.csv is written and synced under a temporary name before anything moves, so a failed write
    (a full disk) leaves the old frames and frames.csv exactly as they were. Frame by frame, not the
    whole folder: a file of the user's in frames/ (notes.txt) stays where it is; only old frames go."""
    import io

    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    tmp = temp_path(run.frames_csv)
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getvalue().encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        raise_write_error(run.frames_csv, e)
        raise
    run.clear_record("extract")
    run.frames_dir.mkdir(exist_ok=True)
    new = sorted(os.listdir(work))
    for name in new:
        replace(work / name, run.frames_dir / name)
    _remove_own(run.frames_dir, FRAME_NAME, keep=set(new), folder_too=False)
    replace(tmp, run.frames_csv)


def _remove_own(folder: Path, names: re.Pattern[str], keep: Collection[str] = (), folder_too: bool = True) -> None:
    """Delete the regular files in folder named as the tool names them (and not in keep), then the
    folder if that left it empty: what the user put there stays (RunFolder.check_links refused
    anything in the way, such as a folder named like a frame, before the command began)."""
    for entry in os.scandir(folder):
        if names.fullmatch(entry.name) and entry.name not in keep and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
    if folder_too:
        with contextlib.suppress(OSError):
            folder.rmdir()
