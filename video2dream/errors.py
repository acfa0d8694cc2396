"""Errors meant for the user: one line, no traceback (unless VIDEO2DREAM_DEBUG=1)."""

from __future__ import annotations

import os


class UserError(Exception):
    """Something the user can fix; the message says what is wrong and what to do."""


class Interrupted(UserError):
    """Ctrl-C or SIGTERM; finished work is kept."""


def debug_enabled() -> bool:
    return os.environ.get("VIDEO2DREAM_DEBUG", "").strip() not in ("", "0", "false", "no")
