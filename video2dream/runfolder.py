"""The run folder: its paths, atomic writes, saved settings, stage records and the lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

STATE = ".video2dream"
TMP_MARK = ".tmp-"
LOCK = "lock"

# What the tool makes at the top of a run folder (a video's, or an image's telephone chain); nothing
# else there is the tool's to delete, clean up or refuse.
OWN_DIRS = re.compile(r"frames|dreams(_r\d{2,})?|morphs|variants")  # variants: generate --variants
OWN_FILES = re.compile(r"frames\.csv|prompts(_r\d{2,})?(_orphaned)?\.csv|truncated\.csv|settings\.yaml|drift\.(csv|png)"
                       r"|refused\.csv"  # --backend replicate: frames its content filter refused
                       r"|dream(_r\d{2,})?(_side_by_side)?\.mp4|dream_grid\.mp4"
                       r"|chain\.(csv|mp4)|chain_strip\.png|index_strip\.png|step_\d{3,}\.png")
# Temporaries: temp_path's STEM.tmp-8HEX[.SUFFIX] (files and folders), extract's frames.tmp-PID.
TEMP_NAME = re.compile(r".+\.tmp-[0-9a-f]{8}(\.[^./]+)?")
FRAMES_WORK = re.compile(r"frames\.tmp-\d+")


class RunFolder:
    """Paths of one run folder; creating the object touches nothing on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"run folder {self.root} is a file; give a folder path (new or existing)")

    frames_dir = property(lambda self: self.root / "frames")
    frames_csv = property(lambda self: self.root / "frames.csv")
    prompts_csv = property(lambda self: self.root / "prompts.csv")
    dreams_dir = property(lambda self: self.root / "dreams")
    morphs_dir = property(lambda self: self.root / "morphs")  # the in-betweens (stages/morph.py)
    video = property(lambda self: self.root / "dream.mp4")
    side_by_side = property(lambda self: self.root / "dream_side_by_side.mp4")
    settings_file = property(lambda self: self.root / "settings.yaml")
    state_dir = property(lambda self: self.root / STATE)

    def exists(self) -> bool:
        return self.state_dir.is_dir()

    def require(self) -> None:
        if not self.root.is_dir():
            raise UserError(
                f"run folder {self.root} does not exist; run `video2dream extract VIDEO -o {self.root}` first"
            )
        if not self.frames_csv.is_file():
            raise UserError(f"{self.root} has no frames.csv; run `video2dream extract VIDEO -o {self.root}` first")

    def ensure(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)

    # -- records: small JSON files in .video2dream/ --------------------------------------------

    def record_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def read_record(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.record_path(name).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def write_record(self, name: str, data: dict[str, Any]) -> None:
        self.ensure()
        write_text(self.record_path(name), json.dumps(data, indent=2, ensure_ascii=False))

    def clear_record(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.record_path(name).unlink()

    # -- saved settings ------------------------------------------------------------------------

    def saved_settings(self) -> dict[str, Any] | None:
        if not self.settings_file.is_file():
            return None
        try:
            data = yaml.safe_load(self.settings_file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            name = e.__class__.__name__
            raise UserError(f"{self.settings_file} is not valid YAML ({name}); fix or delete it") from None
        return data if isinstance(data, dict) else None

    def save_settings(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        header = "# Resolved settings of this run; later commands on this folder reuse them.\n"
        write_text(self.settings_file, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    # -- housekeeping --------------------------------------------------------------------------

    def own_folders(self) -> list[Path]:
        """The folders the tool writes in: the root, .video2dream/, frames/, dreams/, dreams_rNN/."""
        found = [self.root]
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(self.root):
                if (entry.name == STATE or OWN_DIRS.fullmatch(entry.name)) and entry.is_dir(follow_symlinks=False):
                    found.append(Path(entry.path))
        return found

    def remove_temporaries(self) -> None:
        """Delete leftovers of killed writes: only names of the tool's temporary forms, only in the
        folders it writes (a user's notes.tmp-1.txt, or a nested run folder's work, is not ours)."""
        for folder in self.own_folders():
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for entry in os.scandir(folder):
                    if TEMP_NAME.fullmatch(entry.name) or (folder == self.root and FRAMES_WORK.fullmatch(entry.name)):
                        _remove(Path(entry.path))

    def check_links(self) -> None:
        """Refuse symbolic links among the tool's own files and folders: reads and writes would go
        through them, outside the run folder. The run folder itself may be a link."""
        if self.root.is_symlink() and not self.root.exists():
            raise UserError(f"run folder {self.root} is a symbolic link to {os.readlink(self.root)}, which does "
                            "not exist; create that folder, or give another run folder")
        for folder in self.own_folders():
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for entry in os.scandir(folder):
                    own = folder != self.root or entry.name == STATE or OWN_DIRS.fullmatch(entry.name) \
                        or OWN_FILES.fullmatch(entry.name)
                    if own and entry.is_symlink():
                        raise UserError(
                            f"{entry.path} is a symbolic link (to {os.readlink(entry.path)}); video2dream reads "
                            "and writes only inside the run folder: replace the link by a copy of what it "
                            "points to, or remove it, then rerun")

    # -- the lock ------------------------------------------------------------------------------

    lock_file = property(lambda self: self.state_dir / LOCK)

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds the lock now ({} when it does not say), or None when it is free."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {}
        finally:
            os.close(fd)
        return None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per run folder: an exclusive flock on .video2dream/lock. The kernel drops it when
        its process ends, however it ends, so a killed command's lock is never in the way; the file
        itself is kept and says who holds it (pid, host, since when) for the message of a refusal."""
        made = _missing_folders(self.root)
        fresh_state = not os.path.lexists(self.state_dir)
        self.check_links()
        fd = None
        claimed = False
        try:
            fd = self._acquire()
            self._claim(fd)
            claimed = True
            # With the lock held no other command writes here: every temporary is a killed write's
            # (only in a run folder: a folder that merely becomes one holds nobody's leftovers).
            if not fresh_state:
                self.remove_temporaries()
            yield
        finally:
            # A command that failed before writing anything leaves no new folder behind (and no
            # .video2dream/ in a folder that was not a run folder).
            if fresh_state and fd is not None:
                with contextlib.suppress(OSError):
                    if os.listdir(self.state_dir) == [LOCK]:
                        self.lock_file.unlink()  # still held: nobody can lock this file meanwhile
            if fd is not None:
                if claimed:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, 0)  # released cleanly: an empty lock names nobody
                os.close(fd)
            for folder in ([self.state_dir] if fresh_state else []) + made:
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def _acquire(self) -> int:
        """An open descriptor of the lock file, flocked; a clear error when another command has it."""
        path = self.lock_file
        for _ in range(10):
            try:
                self.ensure()
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except FileNotFoundError:
                continue  # .video2dream/ was just removed by a first command that failed
            except OSError as e:
                raise self._lock_error(e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise UserError(self._in_use(holder)) from None
            except OSError as e:  # ENOLCK: a (network) file system without locks
                os.close(fd)
                raise UserError(f"cannot lock {path}: {e.strerror}; this file system has no file locks: "
                                "use a run folder on a local disk") from None
            if _same_file(fd, path):
                return fd
            os.close(fd)  # the file was removed by a command that just ended: lock the new one
        raise UserError(f"cannot take the lock {path}: it keeps disappearing; is another program deleting it?")

    def _claim(self, fd: int) -> None:
        """Write who holds the lock into it (after checking it was not left by another machine)."""
        self._check_other_host(_read_holder(fd))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        data = json.dumps(me).encode()
        try:
            os.ftruncate(fd, 0)
            if os.pwrite(fd, data, 0) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            raise self._lock_error(e) from None

    def _check_other_host(self, holder: dict[str, Any] | None) -> None:
        """A lock left by another machine's command that did not release it. flock tells nothing
        there (on a file system that shares no locks it may still run), so it is not taken over."""
        if holder and holder.get("host") != socket.gethostname():
            raise UserError(
                f"{self.root} may be in use by a video2dream command on host {holder.get('host')} "
                f"(pid {holder['pid']}, since {holder.get('since', '?')}), which did not release its lock "
                f"{self.lock_file}; if no video2dream command runs there on this folder, delete that file and rerun")

    def _in_use(self, holder: dict[str, Any] | None) -> str:
        who = ""
        if holder:
            who = f"pid {holder['pid']} on host {holder.get('host')}, since {holder.get('since', '?')}; "
        return (f"{self.root} is in use by another video2dream command ({who}lock file {self.lock_file}); "
                "wait for it to finish, or stop it")

    def _lock_error(self, e: OSError) -> UserError:
        what = {errno.EROFS: "the run folder must be on a writable disk (copy it to one)",
                errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some disk space (quota)",
                errno.EACCES: f"fix the permissions of {self.root}", errno.EPERM: f"fix the permissions of {self.root}"}
        fix = what.get(e.errno or 0, "check the run folder's path")
        return UserError(f"cannot take the lock {self.lock_file}: {e.strerror or e}; {fix}, then rerun")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _missing_folders(path: Path) -> list[Path]:
    """path and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


# -- atomic writes -------------------------------------------------------------------------------


def temp_path(dest: Path) -> Path:
    """A temporary sibling of dest with the same suffix (ffmpeg picks formats by suffix)."""
    return dest.with_name(f"{dest.stem}{TMP_MARK}{secrets.token_hex(4)}{dest.suffix}")


# A failed write the user can act on (a full disk or quota, a bad disk, permissions, a size limit).
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed onto dest, on error removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dest)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, dest)
    except BaseException as e:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise_write_error(dest, e)
        raise


def raise_write_error(dest: Path, e: BaseException) -> None:
    """A failed write the user can act on as a short UserError naming the file; others unchanged."""
    if isinstance(e, OSError) and e.errno in WRITE_ERRORS:
        raise UserError(f"could not write {dest}: {e.strerror}; free space or fix permissions, then rerun; "
                        "the files written before it are kept") from e


def _fsync(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))
