"""What the run folder may not do: delete what is not the tool's, race for its lock, write through
links, or let a library error or an unreachable hub through as anything but one clear line."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, cli, make_clip, snapshot

from video2dream.backends import Backend, Caption, Done, Painted, register
from video2dream.errors import UserError
from video2dream.models import hub
from video2dream.runfolder import RunFolder
from video2dream.stages import extract as extract_stage
from video2dream.units import Unit


def one_line(code: int, err: str, *words: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err and "unexpected error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("video2dream: error:"), err
    for w in words:
        assert w in err, err


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("trust-clips")
    a = make_clip(d / "a.mp4", "testsrc2=size=64x48:rate=10:duration=3", args=("-pix_fmt", "yuv420p"))
    b = make_clip(d / "b.mp4", "testsrc=size=64x48:rate=10:duration=2", args=("-pix_fmt", "yuv420p"))
    return a, b


@pytest.fixture(scope="module")
def extracted(clips: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("trust-runs") / "base"
    assert cli("extract", clips[0], "-o", run, "--fps", "2") == 0
    return run


def copy_run(extracted: Path, dest: Path) -> Path:
    shutil.copytree(extracted, dest, symlinks=True)
    return dest


# -- clean-up of temporaries: only ours, only where we write ------------------------------------------


def test_clean_up_removes_only_the_tools_temporaries(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    ours = [".video2dream/tmp/prompts.tmp-0123abcd.csv", ".video2dream/tmp/frames.tmp-0a1b2c3d/000001.png",
            # the form before .video2dream/tmp/, for the tool's own names only
            "prompts.tmp-0123abcd.csv", "dream.tmp-89abcdef.mp4", "frames/000002.tmp-deadbeef.png",
            ".video2dream/extract.tmp-00112233.json", "dreams/000001.tmp-aabbccdd.png",
            "dreams_r02/000001.tmp-a0b1c2d3.png"]
    theirs = ["notes.tmp-1.txt", "sub/x.tmp-0123abcd.png", "dreams_review/a.tmp-0123abcd.png",
              "nested run/frames.tmp-4242/000001.png",  # a nested run folder's frames being extracted
              "song.tmp-20240101.mp3", "notes.tmp-deadbeef.txt", "report.tmp-12345678",
              "photos.tmp-cafebabe/a.jpg", "holiday.tmp-20230815/beach.jpg", "frames/notes.tmp-deadbeef.txt",
              # folders of the old form are never claimed: the tool cannot tell them from a user's
              "frames.tmp-4242/000001.png", "frames.tmp-feedf00d/000001.png"]
    for name in ours + theirs:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"x")
    assert cli("extract", clips[0], "-o", run, "--fps", "2") == 0  # up to date: only takes the lock
    assert not [n for n in ours if (run / n).exists()]
    assert all((run / n).read_bytes() == b"x" for n in theirs)
    assert not (run / ".video2dream" / "tmp").exists()  # emptied, then removed on release


USER_FILES = ["song.tmp-20240101.mp3", "notes.tmp-deadbeef.txt", "report.tmp-12345678", "photos.tmp-cafebabe/a.jpg",
              "holiday.tmp-20230815/beach.jpg", "frames.tmp-١٢٣/000001.png", "dreams_r٠١/000001.png",
              "dreams_r٠١/000001.tmp-aabbccdd.png", "prompts_r٠١.csv", "dream_r٠١.mp4", "frames/notes.txt",
              "frames/my stuff/000001.png", "dreams/notes.txt"]


def put_user_files(run: Path) -> None:
    for name in USER_FILES:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(name.encode())


def user_files_kept(run: Path) -> bool:
    return all((run / n).read_bytes() == n.encode() for n in USER_FILES)


@register("flat")
class FlatBackend(Backend):
    """A backend without models: each frame's caption names it, each dream is one flat colour. Hooks
    let a test act between two units."""

    before_unit: Callable[[Path, int], None] | None = None

    def load(self, kind: str, settings: object) -> None:
        pass

    def execute(self, root: Path, units: list[Unit], settings: object,
                wanted: Callable[[Unit], bool] | None = None) -> Iterator[list[Done]]:
        from PIL import Image

        for i, u in enumerate(units):
            if FlatBackend.before_unit is not None:
                FlatBackend.before_unit(root, i)
            if u.kind == "caption":
                yield [(u, Caption(f"frame {u.name}", f"frame {u.name}", ""))]
            else:
                size = (u.params["width"], u.params["height"])
                yield [(u, Painted(Image.new("RGB", size, (40 * i % 256, 90, 160)), "flat", "flat"))]


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_user_files_survive_every_command(clips: tuple[Path, Path], tmp_path: Path) -> None:
    """Names a user may choose (temporary-like, non-ASCII digits, files in frames/ and dreams/) are
    never claimed: not by a first extract into their folder, --force, generate or assemble."""
    run = tmp_path / "mine"
    put_user_files(run)
    assert cli("extract", clips[0], "-o", run, "--preset", "tiny", "--fps", "1") == 0
    assert user_files_kept(run)
    for command in (["interrogate", run, "--backend", "flat"], ["generate", run], ["assemble", run],
                    ["extract", clips[1], "-o", run, "--force"], ["run", clips[1], "-o", run], ["assemble", run]):
        assert cli(*command) == 0, command
        assert user_files_kept(run), command
    (run / "frames" / "000002.png").unlink()  # a plain extract then extracts again
    assert cli("extract", clips[1], "-o", run) == 0
    assert user_files_kept(run) and (run / "frames" / "000002.png").is_file()
    assert sorted(p.name for p in (run / "frames").iterdir()) == ["000001.png", "000002.png", "my stuff", "notes.txt"]
    assert not (run / ".video2dream" / "tmp").exists()


def test_something_in_the_way_in_frames_is_refused(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    (run / "frames" / "000002.png").unlink()
    (run / "frames" / "000002.png").mkdir()
    (run / "frames" / "000002.png" / "mine.txt").write_text("keep me")
    before = snapshot(run)
    for command in (["extract", clips[1], "-o", run, "--force"], ["extract", clips[0], "-o", run, "--fps", "2"]):
        capsys.readouterr()
        one_line(cli(*command), capsys.readouterr().err, str(run / "frames" / "000002.png"), "is a folder",
                 "move it out")
        assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["gap", "extra"])
def test_extract_checks_its_frames_are_numbered_in_order(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], damage: str,
) -> None:
    """Another program deleting or adding a file in extract's side folder while ffmpeg writes (as the
    old clean-up of a parent folder did) must not give a misnumbered timeline."""
    run = copy_run(extracted, tmp_path / "run")
    before = snapshot(run)
    real = extract_stage._run_ffmpeg

    def meddled(video: Path, out_dir: Path, *args: object) -> None:
        real(video, out_dir, *args)
        if damage == "gap":
            (out_dir / "000002.png").unlink()
        else:
            shutil.copy(out_dir / "000001.png", out_dir / "000001 copy.png")

    monkeypatch.setattr(extract_stage, "_run_ffmpeg", meddled)
    capsys.readouterr()
    one_line(cli("extract", clips[0], "-o", run, "--fps", "3"), capsys.readouterr().err, "in order", "extract again")
    work = {".video2dream/lock", "settings.yaml"}  # the frames, frames.csv and records are as they were
    assert {k: v for k, v in snapshot(run).items() if k not in work} == \
        {k: v for k, v in before.items() if k not in work}


# -- extract --force: exactly the names the tool makes ------------------------------------------------


def test_force_removes_only_what_the_tool_made(extracted: Path, clips: tuple[Path, Path], tmp_path: Path) -> None:
    run = copy_run(extracted, tmp_path / "run")
    ours = ["prompts.csv", "prompts_r02.csv", "truncated.csv", "dreams/000001.png", "dreams_r02/000001.png",
            "dream.mp4", "dream_side_by_side.mp4", "dream_r02.mp4", "dream_r02_side_by_side.mp4",
            "dream_grid.mp4", "drift.csv", "drift.png"]
    theirs = ["dreams_review/a.png", "prompts_review_notes.csv", "dreamy_song.mp4", "dream_notes.mp4",
              "prompts.csv.bak", "my dreams/b.png"]
    for name in ours + theirs:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"x")
    assert cli("extract", clips[1], "-o", run, "--force") == 0  # another video: start over
    assert not [n for n in ours if (run / n).exists()]
    assert not (run / "dreams").exists() and not (run / "dreams_r02").exists()
    assert all((run / n).read_bytes() == b"x" for n in theirs)


# -- the lock -----------------------------------------------------------------------------------------

HOLDER = """
import os, sys, time
from pathlib import Path
from video2dream.runfolder import RunFolder
from video2dream.errors import UserError
run, release = RunFolder(sys.argv[1]), Path(sys.argv[2])
go = release.parent / "go"
while not go.exists():  # all start together, as closely as can be
    time.sleep(0.001)
try:
    with run.lock():
        (release.parent / f"got-{os.getpid()}").touch()
        print("got", flush=True)
        while not release.exists():
            time.sleep(0.01)
except UserError as e:
    print("refused", e, flush=True)
    sys.exit(1)
"""


def holder(run: Path, release: Path) -> subprocess.Popen[str]:
    """A process that takes the lock of run and holds it until the file release appears."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(run), str(release)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def stale_lock(run: Path, pid: int) -> Path:
    lock = run / ".video2dream" / "lock"
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    return lock


def test_a_stale_lock_goes_to_exactly_one_of_many_commands_started_together(
    extracted: Path, tmp_path: Path
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale_lock(run, int(dead.stdout))  # the pid of a process that has ended
    (tmp_path / "signals").mkdir()
    release = tmp_path / "signals" / "release"
    procs = [holder(run, release) for _ in range(8)]
    (release.parent / "go").touch()
    try:
        # Each one is refused (and ends) or gets the lock (and holds it until released).
        deadline = time.monotonic() + 120
        while sum(p.poll() is not None for p in procs) + len(list(release.parent.glob("got-*"))) < len(procs):
            assert time.monotonic() < deadline, "the commands neither ended nor got the lock"
            time.sleep(0.02)
        got = [int(p.name[4:]) for p in release.parent.glob("got-*")]
        assert len(got) == 1, f"{len(got)} commands hold the lock at once"
        refused = [p.communicate()[0] for p in procs if p.pid not in got]
        assert all("in use by another video2dream command" in out for out in refused), refused
        assert (RunFolder(run).lock_holder() or {}).get("pid") == got[0]
    finally:
        release.touch()
        for p in procs:
            p.communicate(timeout=60)
    assert RunFolder(run).lock_holder() is None


def test_a_deleted_lock_file_lets_no_second_command_in(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    (tmp_path / "signals").mkdir()
    release = tmp_path / "signals" / "release"
    (tmp_path / "signals" / "go").touch()
    proc = holder(run, release)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "got"
        (run / ".video2dream" / "lock").unlink()  # by hand, or by a script clearing "stale" locks
        for _ in range(2):
            capsys.readouterr()
            one_line(cli("extract", clips[1], "-o", run, "--force"), capsys.readouterr().err,
                     "in use by another video2dream command", "deleted", "stop it")
        assert RunFolder(run).lock_holder() == {}
    finally:
        release.touch()
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert cli("extract", clips[0], "-o", run, "--fps", "2") == 0  # released


def test_a_lock_whose_pid_is_now_another_process_is_taken_over(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    stale_lock(run, os.getppid())  # alive, but not a video2dream command holding this folder
    assert cli("extract", clips[0], "-o", run, "--fps", "2") == 0


def test_a_held_lock_names_pid_host_and_file(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    (tmp_path / "signals").mkdir()
    release = tmp_path / "signals" / "release"
    (tmp_path / "signals" / "go").touch()
    proc = holder(run, release)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "got"
        before = snapshot(run)
        capsys.readouterr()
        one_line(cli("extract", clips[1], "-o", run, "--force"), capsys.readouterr().err,
                 "in use by another video2dream command", f"pid {proc.pid}", f"host {socket.gethostname()}",
                 str(run / ".video2dream" / "lock"), "stop it")
        assert snapshot(run) == before
    finally:
        release.touch()
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert cli("extract", clips[0], "-o", run, "--fps", "2") == 0  # released


def test_an_unreleased_lock_of_another_host_is_explained(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    lock = run / ".video2dream" / "lock"
    lock.write_text(json.dumps({"pid": 4242, "host": "render-07", "since": "2026-11-29 10:00:00 +0000"}))
    for _ in range(2):  # a refusal leaves the lock as it was
        capsys.readouterr()
        one_line(cli("extract", clips[0], "-o", run, "--fps", "2"), capsys.readouterr().err,
                 "host render-07", "pid 4242", str(lock), "delete that file")
    lock.unlink()
    assert cli("extract", clips[0], "-o", run, "--fps", "2") == 0


def _failing(monkeypatch: pytest.MonkeyPatch, where: str, code: int) -> None:
    """Make opening (or writing) the lock file fail as a read-only or full disk does."""
    if where == "open":
        real_open = os.open

        def fake_open(path: object, *args: object, **kwargs: object) -> int:
            if str(path).endswith(os.path.join(".video2dream", "lock")):
                raise OSError(code, os.strerror(code), str(path))
            return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", fake_open)
    else:
        def fake_pwrite(fd: int, data: bytes, offset: int) -> int:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "pwrite", fake_pwrite)


@pytest.mark.parametrize(("where", "code", "fix"), [("open", errno.EROFS, "writable disk"),
                                                    ("write", errno.ENOSPC, "free some disk space"),
                                                    ("open", errno.EACCES, "permissions")])
def test_a_lock_that_cannot_be_written_is_one_line_and_touches_nothing(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], where: str, code: int, fix: str,
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    before = snapshot(run)
    _failing(monkeypatch, where, code)
    capsys.readouterr()
    one_line(cli("extract", clips[1], "-o", run, "--force"), capsys.readouterr().err,
             "cannot take the lock", str(run / ".video2dream" / "lock"), fix)
    assert snapshot(run) == before
    new = tmp_path / "new" / "deeper"
    one_line(cli("extract", clips[0], "-o", new), capsys.readouterr().err, "cannot take the lock", fix)
    assert not (tmp_path / "new").exists()


# -- symbolic links inside a run folder ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["dreams", "frames", ".video2dream", "prompts.csv", "dream.mp4",
                                  "frames/000002.png", "dreams_r02"])
def test_links_inside_a_run_folder_are_refused_and_their_targets_untouched(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    (run / "dreams").mkdir()
    shutil.copy(run / "frames" / "000001.png", run / "dreams" / "000001.png")
    (run / "dreams_r02").mkdir()
    (run / "prompts.csv").write_text("filename,prompt\n000001.png,a cat\n")
    (run / "dream.mp4").write_bytes(b"not really a video")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / Path(name).name
    shutil.move(run / name, target)
    (run / name).symlink_to(target, target_is_directory=target.is_dir())
    before, kept = snapshot(run), snapshot(outside)
    for command in (["extract", clips[1], "-o", run, "--force"], ["assemble", run, "--from", "frames"]):
        capsys.readouterr()
        one_line(cli(*command), capsys.readouterr().err, str(run / name), "symbolic link")
        assert snapshot(outside) == kept
        assert snapshot(run) == before and (run / name).is_symlink()


def test_a_folder_swapped_for_a_link_mid_run_receives_nothing(
    clips: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """dreams/ replaced by a link to an outside folder once the first dream is written: the next
    dream is refused at its rename, in one line, and the outside folder stays empty."""
    run = tmp_path / "run"
    assert cli("extract", clips[0], "-o", run, "--preset", "tiny", "--fps", "1") == 0
    assert cli("interrogate", run, "--backend", "flat") == 0
    outside = tmp_path / "outside"
    outside.mkdir()

    def swap(root: Path, i: int) -> None:
        if i == 1:
            deadline = time.monotonic() + 60  # the writer thread commits the first dream meanwhile
            while not (root / "dreams" / "000001.png").exists():
                assert time.monotonic() < deadline, "the first dream was never written"
                time.sleep(0.01)
            (root / "dreams").rename(root / "dreams moved")
            (root / "dreams").symlink_to(outside, target_is_directory=True)

    FlatBackend.before_unit = swap
    try:
        capsys.readouterr()
        one_line(cli("generate", run), capsys.readouterr().err, str(run / "dreams"), "symbolic link",
                 "nothing was written through it")
    finally:
        FlatBackend.before_unit = None
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (run / "dreams moved").iterdir()) == ["000001.png"]
    assert not (run / ".video2dream" / "tmp").exists()


def guarded(fifos: list[Path], *args: str | Path) -> int:
    """cli(*args); should it still run after a minute (blocked on one of the FIFOs), a watchdog opens
    their other end again and again (so it can end), and the test fails."""
    stop, fired = threading.Event(), threading.Event()

    def watchdog() -> None:
        if stop.wait(60):
            return
        fired.set()
        while not stop.wait(0.1):
            for fifo in fifos:
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        code = cli(*args)
    finally:
        stop.set()
        thread.join()
    assert not fired.is_set(), f"{args[0]} blocked on a FIFO"
    return code


@pytest.mark.parametrize("name", ["dreams/000002.png", "frames/000002.png", "prompts.csv", "frames.csv",
                                  ".video2dream/extract.json", "settings.yaml"])
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_fifo_or_folder_named_as_the_tools_file_is_one_line(
    extracted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, kind: str
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    (run / "dreams").mkdir()
    (run / "prompts.csv").write_text("filename,prompt\n" + "".join(f"{i:06d}.png,a cat\n" for i in range(1, 7)))
    (run / name).unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(run / name)
    else:
        (run / name).mkdir()
        (run / name / "mine.txt").write_text("keep me")
    before = snapshot(run) if kind == "folder" else None
    what = "FIFO" if kind == "fifo" else "folder"
    for command in ("interrogate", "generate", "assemble"):
        capsys.readouterr()
        one_line(guarded([run / name], command, run, "--preset", "tiny"), capsys.readouterr().err,
                 str(run / name), f"is a {what}", "move it out")
        if before is not None:
            assert snapshot(run) == before
    capsys.readouterr()
    assert guarded([run / name], "status", run) in (0, 1)  # says what it can, and ends
    assert "Traceback" not in capsys.readouterr().err


def test_a_linked_run_folder_works_and_a_dangling_one_is_explained(
    extracted: Path, clips: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(extracted, tmp_path / "run")
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    assert cli("extract", clips[0], "-o", link, "--fps", "2") == 0
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere", target_is_directory=True)
    capsys.readouterr()
    one_line(cli("extract", clips[0], "-o", dangling), capsys.readouterr().err, "does not exist", "nowhere")
    assert not (tmp_path / "nowhere").exists()


# -- library errors: one line each --------------------------------------------------------------------


def test_a_decompression_bomb_is_one_line_naming_the_image(
    extracted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    image = tmp_path / "huge.png"
    shutil.copy(extracted / "frames" / "000001.png", image)  # 64x48: huge once the limit is 1000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    capsys.readouterr()
    one_line(cli("telephone", image, "-o", tmp_path / "out", "--preset", "tiny", "--steps", "1"),
             capsys.readouterr().err, str(image), "too large")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pickled_weights_are_one_line(extracted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A caption model whose pytorch_model.bin pickles more than tensors: refused by torch.load's
    weights_only, and said so in one line naming the model."""
    import argparse

    import torch
    from safetensors.torch import load_file

    model = tmp_path / "blip"
    shutil.copytree(hub.tiny_model_dir("tiny:blip"), model)
    weights = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save({**weights, "surprise": argparse.Namespace(run="code")}, model / "pytorch_model.bin")
    run = copy_run(extracted, tmp_path / "run")
    capsys.readouterr()
    one_line(cli("interrogate", run, "--mode", "caption", "--caption-model", model), capsys.readouterr().err,
             str(model), "a local folder", "pickle", ".safetensors")


def test_a_lora_file_is_called_a_file_and_debug_0_means_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"not weights")
    monkeypatch.setenv("VIDEO2DREAM_DEBUG", "0")  # off: a short error, not the raw exception
    monkeypatch.setattr(hub, "check_hub_reachable", lambda kind, name: None)  # not what this test is about
    for name, where in [(str(lora), "(a local file)"), (str(tmp_path), "(a local folder)"),
                        ("nobody/style", "(a Hugging Face model id)")]:
        with pytest.raises(UserError, match=r"LoRA") as caught, hub.loading("LoRA", name):
            raise OSError("cannot read it")
        assert where in str(caught.value)


# -- an unreachable hub: noticed at once ----------------------------------------------------------------


class Connections:
    """Records every TCP connection attempt of this process (to count them, not to fake them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, int]] = []
        real = socket.socket.connect

        def connect(sock: socket.socket, address: object) -> None:
            if isinstance(address, tuple):
                self.seen.append((str(address[0]), int(address[1])))
            return real(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def closed_hub(monkeypatch: pytest.MonkeyPatch) -> tuple[int, Connections]:
    """HF_ENDPOINT at a local port nobody listens on, downloads allowed (no HF_HUB_OFFLINE)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "_probed", {})
    return port, Connections(monkeypatch)


def test_an_unreachable_hub_is_one_line_after_one_attempt(
    extracted: Path, tmp_path: Path, closed_hub: tuple[int, Connections], capsys: pytest.CaptureFixture[str]
) -> None:
    port, connections = closed_hub
    run = copy_run(extracted, tmp_path / "run")
    capsys.readouterr()
    one_line(cli("interrogate", run, "--mode", "caption", "--caption-model", "nobody/uncached-blip"),
             capsys.readouterr().err, f"cannot reach the Hugging Face hub (127.0.0.1:{port}",
             "nobody/uncached-blip", "HF_HUB_OFFLINE=1", "local folder")
    assert connections.seen.count(("127.0.0.1", port)) == 1
    assert not (run / "prompts.csv").exists()


def test_no_probe_for_tiny_local_cached_or_offline_models(
    tmp_path: Path, closed_hub: tuple[int, Connections], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    port, connections = closed_hub
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot_dir = tmp_path / "hub" / "models--someone--cached-model" / "snapshots" / "abc123"
    snapshot_dir.mkdir(parents=True)
    (snapshot_dir / "config.json").write_text("{}")
    for kind, name in [("SDXL model", "tiny:sdxl"), ("caption model", str(tmp_path)),
                       ("caption model", "someone/cached-model"), ("CLIP model", "ViT-B-32/no-such-tag")]:
        hub.check_hub_reachable(kind, name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.check_hub_reachable("caption model", "nobody/uncached-blip")
    assert connections.seen == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(UserError, match="cannot reach"):
        hub.check_hub_reachable("CLIP model", "ViT-B-32/openai")  # open_clip's table names its repo
    assert connections.seen == [("127.0.0.1", port)]
