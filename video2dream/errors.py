"""Errors meant for the user: one line, no traceback (unless VIDEO2DREAM_DEBUG=1)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

# Where a value came from, when it came from the run folder (settings.resolve's SAVED).
SAVED_SETTINGS = "the run folder's settings.yaml"
# Where a value came from, when the caller typed it (settings.resolve's overrides): no "(from ...)".
COMMAND_LINE = "the command line"


def short(value: Any, limit: int = 60) -> str:
    """repr(value) for a message, cut to about limit characters: a 10,000-character id or a list
    of thousands of items is shown by its start and its size, never whole."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * limit:
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1} digits"  # str() refuses past 4,300
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit - 3] + '...'!r} ({len(value)} characters)"  # repr: a NUL or newline is visible
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text)} characters)"


def short_path(path: object, limit: int = 200) -> str:
    """A path as it is (unquoted, as messages show paths), or short() of it when it is very long."""
    text = str(path)
    return text if len(text) <= limit else short(text, limit)


class UserError(Exception):
    """Something the user can fix; the message says what is wrong and what to do.

    The message may name settings as {section.name} placeholders, those listed in paths (only those:
    a message quoting a file name with braces stays as it is). str(e) names them by path, the
    library's words; a command line renders them as its own flags (render(flags)), or as
    `setting PATH` when the command has none for it."""

    def __init__(self, message: str = "", *, paths: tuple[str, ...] = ()) -> None:
        self.message = message
        self.paths = tuple(paths)
        super().__init__(self.render())

    def render(self, flags: Mapping[str, str] | None = None) -> str:
        """The message: settings by path (flags None), or by this command's flags."""
        if not self.paths:
            return self.message
        return re.sub(r"\{([\w.]+)\}", lambda m: _named(m[1], flags) if m[1] in self.paths else m[0], self.message)


def _named(path: str, flags: Mapping[str, str] | None) -> str:
    if flags is None:
        return path
    return flags.get(path) or f"setting {path}"


class Interrupted(BaseException):
    """SIGTERM (Ctrl-C is KeyboardInterrupt); finished work is kept. Not an Exception, like
    KeyboardInterrupt: raised by the signal handler wherever the program is, it must not be caught
    by a library's `except Exception` (transformers' tokenizer turned it into a ValueError) or ours."""


class SettingError(UserError):
    """A setting's value is wrong. It carries the setting's path ("generate.steps"), the problem and
    a hint, in the library's words: str(e) names settings by path, so that a script or a web page
    knows what to fix; a command line renders it with its own flag names (render(flags)).

    problem and hint may name other settings as {section.name} (those in `also`); the message starts
    with the setting unless problem names it as {path} itself. origin: where the value came from
    (a preset, a config file, the run folder's settings.yaml), shown unless it was typed."""

    def __init__(self, path: str, problem: str, hint: str = "", *, also: tuple[str, ...] = (),
                 origin: str | None = None) -> None:
        self.path = path
        self.paths = (path, *also)
        self.problem = problem
        self.hint = hint
        self.origin = origin
        Exception.__init__(self, self.render())

    def render(self, flags: Mapping[str, str] | None = None) -> str:
        """The message. flags None: settings by path (the library's words). flags a mapping of path ->
        flag (a command's own): settings by that flag, those without one as `setting PATH`."""
        def name(path: str, subject: bool = False) -> str:
            if flags is None:
                return path
            return flags.get(path) or (f"setting {path}" if subject else path)

        def fill(text: str) -> str:
            return re.sub(r"\{([\w.]+)\}", lambda m: name(m[1], m[1] == self.path) if m[1] in self.paths
                          else m[0], text)

        template = self.problem if "{" + self.path + "}" in self.problem else "{" + self.path + "} " + self.problem
        text = fill(template) + self._where(flags)
        return f"{text}; {fill(self.hint)}" if self.hint else text

    def _where(self, flags: Mapping[str, str] | None) -> str:
        """Where the value came from, and for a flag of this command what the user typed it as."""
        flag = None if flags is None else flags.get(self.path)
        if self.origin in (None, COMMAND_LINE):
            return "" if flags is None or flag else " (in a --config file or settings.yaml)"
        if self.origin == SAVED_SETTINGS:
            fix = f"give {flag} to replace it" if flag else "edit it there, or give it in a --config file"
            return f" ({self.path} in {self.origin}; {fix})" if flags is not None else f" (in {self.origin})"
        return f" ({self.path}, from {self.origin})" if flag else f" (from {self.origin})"


def debug_enabled() -> bool:
    return os.environ.get("VIDEO2DREAM_DEBUG", "").strip() not in ("", "0", "false", "no")
