"""Errors meant for the user: one line, no traceback (unless VIDEO2DREAM_DEBUG=1)."""

from __future__ import annotations

import os


class UserError(Exception):
    """Something the user can fix; the message says what is wrong and what to do."""


class Interrupted(BaseException):
    """SIGTERM (Ctrl-C is KeyboardInterrupt); finished work is kept. Not an Exception, like
    KeyboardInterrupt: raised by the signal handler wherever the program is, it must not be caught
    by a library's `except Exception` (transformers' tokenizer turned it into a ValueError) or ours."""


def debug_enabled() -> bool:
    return os.environ.get("VIDEO2DREAM_DEBUG", "").strip() not in ("", "0", "false", "no")
