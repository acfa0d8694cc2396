"""The run folder: its paths, atomic writes, saved settings, stage records and the lock."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

STATE = ".video2dream"
TMP_MARK = ".tmp-"


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

    def remove_temporaries(self) -> None:
        """Delete leftovers of killed writes (files named *.tmp-*), anywhere in the run folder."""
        if not self.root.is_dir():
            return
        for path in self.root.rglob(f"*{TMP_MARK}*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per run folder; a lock left by a dead process is taken over."""
        fresh = not self.root.exists()
        fresh_state = not self.state_dir.exists()
        self.ensure()
        path = self.state_dir / "lock"
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder and _alive(holder):
                    raise UserError(
                        f"{self.root} is in use by another video2dream command (pid {holder['pid']}); "
                        "wait for it to finish, or stop it"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            break
        else:
            raise UserError(f"could not take the lock {path}; delete it if no video2dream command is running")
        try:
            # With the lock held no other command writes here: every *.tmp-* is a killed write's
            # (only in a run folder: a folder that merely becomes one holds nobody's leftovers).
            if not fresh_state:
                self.remove_temporaries()
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            # A command that failed before writing anything leaves no empty folder behind (and no
            # .video2dream/ in a folder that was not a run folder).
            if fresh_state:
                with contextlib.suppress(OSError):
                    self.state_dir.rmdir()
            if fresh:
                with contextlib.suppress(OSError):
                    self.root.rmdir()


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # can't tell for another machine: assume it is running
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
