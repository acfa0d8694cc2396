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
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from . import safeyaml
from .errors import UserError

STATE = ".video2dream"
TMP_MARK = ".tmp-"
LOCK = "lock"
TMP_DIR = "tmp"  # .video2dream/tmp/: every temporary of a run folder, and nothing else

# What the tool makes at the top of a run folder (a video's, or an image's telephone chain); nothing
# else there is the tool's to delete, clean up or refuse. ASCII digits only: `\d` would also claim
# a user's dreams_r٠١/ (Arabic-Indic digits).
OWN_DIRS = re.compile(r"frames|dreams(_r[0-9]{2,})?|morphs|variants")  # variants: generate --variants
OWN_FILES = re.compile(r"frames\.csv|prompts(_r[0-9]{2,})?(_orphaned)?\.csv|truncated\.csv|settings\.yaml"
                       r"|drift\.(csv|png)"
                       r"|refused\.csv"  # --backend replicate: frames its content filter refused
                       r"|dream(_r[0-9]{2,})?(_side_by_side)?\.mp4|dream_grid\.mp4"
                       r"|chain\.(csv|mp4)|chain_strip\.png|index_strip\.png|step_[0-9]{3,}\.png")
# The pictures in frames/, dreams*/, morphs/ and variants/: frames and dreams, in-betweens (A-B_K.png),
# candidates (N_K.png).
OWN_PICTURES = re.compile(r"[0-9]{6,}\.png|[0-9]{6,}-[0-9]{6,}_[0-9]+\.png|[0-9]{6,}_[0-9]+\.png")
# The temporaries' form before .video2dream/tmp/ (STEM.tmp-8HEX[.SUFFIX] beside their file), still
# made beside a file on another file system than the run folder's. Cleaned up only as files, only
# where STEM[.SUFFIX] is a name of the tool's in that folder: a user's notes.tmp-deadbeef.txt or
# photos.tmp-cafebabe/ is never claimed.
OLD_TEMP = re.compile(r"(.+)\.tmp-[0-9a-f]{8}((?:\.[^./]+)?)")


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
        check_regular(self.frames_csv)
        if not self.frames_csv.is_file():
            raise UserError(f"{self.root} has no frames.csv; run `video2dream extract VIDEO -o {self.root}` first")

    def ensure(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)

    # -- records: small JSON files in .video2dream/ --------------------------------------------

    def record_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def read_record(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads(read_regular(self.record_path(name)).decode("utf-8"))
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
        if not os.path.lexists(self.settings_file):
            return None
        try:
            check_regular(self.settings_file)  # a FIFO or folder there is one line, never a hang
            data = safeyaml.read(self.settings_file)
        except safeyaml.Unsafe as e:
            raise UserError(f"{self.settings_file} is refused: {e}; fix it, or move it away to start from "
                            "the defaults") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            name = e.__class__.__name__
            raise UserError(f"{self.settings_file} is not valid YAML ({name}); fix or delete it") from None
        if not isinstance(data, dict):  # replaced by the defaults, the run's settings would be lost
            raise UserError(f"{self.settings_file} holds {safeyaml.kind_of(data)}, not this run's settings "
                            "(a mapping of sections: extract:, generate:, ...); restore it, or move it away to "
                            "start from the defaults")
        return data

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

    tmp_dir = property(lambda self: self.state_dir / TMP_DIR)

    def remove_temporaries(self) -> None:
        """Delete leftovers of killed writes: everything in .video2dream/tmp/ (only the tool writes
        there), and files of the old form STEM.tmp-8HEX.SUFFIX whose STEM.SUFFIX is one of the tool's
        names in that folder. Never a folder outside .video2dream/tmp/: the tool made none there."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if not os.path.islink(self.tmp_dir):
                for entry in os.scandir(self.tmp_dir):
                    _remove(Path(entry.path))
        for folder in self.own_folders():
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for entry in os.scandir(folder):
                    if self._old_temporary(folder, entry.name) and entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)

    def _old_temporary(self, folder: Path, name: str) -> bool:
        m = OLD_TEMP.fullmatch(name)
        if not m:
            return False
        meant = m.group(1) + m.group(2)
        if folder == self.root:
            return OWN_FILES.fullmatch(meant) is not None
        return folder == self.state_dir or OWN_PICTURES.fullmatch(meant) is not None

    def check_links(self) -> None:
        """Refuse symbolic links among the tool's own files and folders: reads and writes would go
        through them, outside the run folder. The run folder itself may be a link. Refuse too a
        folder, FIFO, socket or device named as one of the tool's files (a frame, a dream,
        prompts.csv, a record): reading it would hang or fail, writing it would lose it."""
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
                    if self._own_file_name(folder, entry.name) and not entry.is_file(follow_symlinks=False):
                        raise UserError(not_a_file(Path(entry.path), entry.stat(follow_symlinks=False).st_mode))

    def _own_file_name(self, folder: Path, name: str) -> bool:
        """Whether name in folder is one of the tool's files (not its folders)."""
        if folder == self.root:
            return OWN_FILES.fullmatch(name) is not None
        if folder == self.state_dir:
            return name == LOCK or name.endswith((".json", ".jsonl"))
        return OWN_PICTURES.fullmatch(name) is not None

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
        return {} if _locked_by_another(self.root) else None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per run folder: an exclusive flock on .video2dream/lock. The kernel drops it when
        its process ends, however it ends, so a killed command's lock is never in the way; the file
        itself is kept and says who holds it (pid, host, since when) for the message of a refusal.
        The run folder itself is flocked too: a lock file deleted while its command runs must not let
        a second command in on a new file. While held, writes land in the run folder relative to an
        open descriptor of it (see replace), never through a link swapped in meanwhile."""
        made = _missing_folders(self.root)
        fresh_state = not os.path.lexists(self.state_dir)
        self.check_links()
        fd = folder_fd = None
        claimed = False
        try:
            fd = self._acquire()
            folder_fd = self._lock_folder(fd)
            self._claim(fd)
            claimed = True
            with _HELD_GUARD:
                _HELD[_identity(folder_fd)] = (self.root, folder_fd)
            # With the lock held no other command writes here: every temporary is a killed write's
            # (only in a run folder: a folder that merely becomes one holds nobody's leftovers).
            if not fresh_state:
                self.remove_temporaries()
            yield
        finally:
            if folder_fd is not None:
                with _HELD_GUARD:
                    _HELD.pop(_identity(folder_fd), None)
            with contextlib.suppress(OSError):
                self.tmp_dir.rmdir()  # when empty: no trace of a command that left no temporary
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
            if folder_fd is not None:
                os.close(folder_fd)
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

    def _lock_folder(self, lock_fd: int) -> int:
        """An open descriptor of the run folder, flocked (where the file system locks folders: NFS
        does not, and the lock file alone guards it there)."""
        try:
            folder_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise self._lock_error(e) from None
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(folder_fd)
            holder = _read_holder(lock_fd)
            if holder:
                raise UserError(self._in_use(holder)) from None
            raise UserError(f"{self.root} is in use by another video2dream command, whose lock file {self.lock_file} "
                            "was deleted while it ran; wait for it to finish, or stop it") from None
        except OSError:
            pass
        return folder_fd

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


# The run folders this process holds the lock of: (st_dev, st_ino) -> (path, open descriptor).
_HELD: dict[tuple[int, int], tuple[Path, int]] = {}
_HELD_GUARD = threading.Lock()


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _locked_by_another(folder: Path) -> bool:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


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
    """A temporary for dest, with its suffix (ffmpeg picks formats by suffix): in the run folder's
    .video2dream/tmp/ when dest is in a run folder this process has locked (on the same file system,
    so the rename is atomic), where no user file can be taken for one; beside dest otherwise."""
    name = f"{dest.stem}{TMP_MARK}{secrets.token_hex(4)}{dest.suffix}"
    held = _held_root(dest)
    if held is not None:
        tmp_dir = held[0] / STATE / TMP_DIR
        with contextlib.suppress(OSError):
            tmp_dir.mkdir(exist_ok=True)
            here = os.stat(tmp_dir, follow_symlinks=False)
            if stat.S_ISDIR(here.st_mode) and here.st_dev == os.stat(dest.parent).st_dev:
                return tmp_dir / name
    return dest.with_name(name)


def _held_root(path: Path) -> tuple[Path, int, tuple[str, ...]] | None:
    """The locked run folder path is in, directly or in one of the tool's folders (frames/, dreams/,
    .video2dream/, .video2dream/tmp/, ...): its path, its open descriptor, and path's parts below it.
    None for any other place (a folder of the user's, such as assemble -o's, may well be a link)."""
    with _HELD_GUARD:
        if not _HELD:
            return None
        held = dict(_HELD)
    folder = path.parent
    for depth in range(1, 4):
        try:
            st = os.stat(folder)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) in held:
            root, fd = held[(st.st_dev, st.st_ino)]
            parts = path.parts[-depth:]
            return (root, fd, parts) if _own_folder(parts[:-1]) else None
        if folder == folder.parent:
            break
        folder = folder.parent
    return None


def _own_folder(parts: tuple[str, ...]) -> bool:
    if len(parts) == 1:
        return parts[0] == STATE or OWN_DIRS.fullmatch(parts[0]) is not None
    return len(parts) == 0 or parts == (STATE, TMP_DIR)


def replace(src: Path, dest: Path) -> None:
    """os.replace(src, dest); inside a locked run folder, relative to its open descriptor and without
    following a link at any step: a folder replaced by a link to somewhere else while the command
    ran (dreams/ -> /elsewhere) is refused in one line, and nothing lands outside the run folder."""
    to, src_at = _held_root(dest), _held_root(src)
    if to is None or src_at is None or to[1] != src_at[1]:
        os.replace(src, dest)
        return
    root, fd, parts = to
    dest_dir = _open_below(root, fd, parts[:-1])
    try:
        src_dir = _open_below(root, fd, src_at[2][:-1])
        try:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(parts[-1], dir_fd=dest_dir, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) and not os.path.isdir(src):
                    raise UserError(not_a_file(dest, st.st_mode))
            os.replace(src_at[2][-1], parts[-1], src_dir_fd=src_dir, dst_dir_fd=dest_dir)
        finally:
            os.close(src_dir)
    finally:
        os.close(dest_dir)


def _open_below(root: Path, fd: int, parts: tuple[str, ...]) -> int:
    """An open descriptor of the folder root/parts, opened step by step without following links."""
    here = os.dup(fd)
    for i, part in enumerate(parts):
        try:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=here)
        except OSError as e:
            os.close(here)
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                shown = root.joinpath(*parts[: i + 1])
                raise UserError(f"{shown} is no longer a folder of the run folder: it became a symbolic link or a "
                                "file while this command ran; video2dream writes only inside the run folder, so "
                                f"nothing was written through it: put the folder {part} back, then rerun") from None
            raise
        os.close(here)
        here = below
    return here


def read_regular(path: Path) -> bytes:
    """path's bytes, when it is a regular file (FileNotFoundError when there is none); anything else
    there (a folder, a FIFO that would block forever, a socket, a device) is a UserError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting
    except OSError as e:
        if e.errno == errno.ENXIO:  # a socket
            raise UserError(not_a_file(path, os.stat(path).st_mode)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UserError(not_a_file(path, mode))
    with os.fdopen(fd, "rb") as f:
        return f.read()


def is_regular(path: Path) -> bool:
    """Whether path is a regular file itself (not a link, folder, FIFO...): safe to open and read."""
    try:
        return stat.S_ISREG(os.stat(path, follow_symlinks=False).st_mode)
    except OSError:
        return False


def check_regular(path: Path) -> None:
    """Refuse anything but a regular file (or nothing) at path, before a library opens it."""
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(not_a_file(path, mode))


def not_a_file(path: Path, mode: int) -> str:
    kind = "folder" if stat.S_ISDIR(mode) else "FIFO (named pipe)" if stat.S_ISFIFO(mode) else \
        "socket" if stat.S_ISSOCK(mode) else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
        "symbolic link" if stat.S_ISLNK(mode) else "special file"
    return (f"{path} is a {kind}, where video2dream keeps a file of its own; move it out of the run folder "
            "(or rename it), then rerun")


# A failed write the user can act on (a full disk or quota, a bad disk, permissions, a size limit).
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], before_replace: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed onto dest, on error removed.
    before_replace runs once the temporary is complete, just before the rename: it may raise to
    leave dest as it is."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dest)
    try:
        yield tmp
        _fsync(tmp)
        if before_replace is not None:
            before_replace()
        replace(tmp, dest)
    except BaseException as e:
        if tmp.is_dir() and not tmp.is_symlink():
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


def write_bytes(dest: str | os.PathLike[str], data: bytes,
                before_replace: Callable[[], None] | None = None) -> None:
    with atomic_path(dest, before_replace) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike[str], text: str, before_replace: Callable[[], None] | None = None) -> None:
    write_bytes(dest, text.encode("utf-8"), before_replace)
