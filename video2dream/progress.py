"""Progress bars (tqdm on stderr, shown only on a terminal) and short status lines. The library's
code calls say(), which goes to the current reporter (video2dream.report); the CLI's prints here."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(**kwargs: Any):
    from tqdm import tqdm

    kwargs.setdefault("disable", None)  # None: off when stderr is not a terminal
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(**kwargs)


def say(message: str) -> None:
    """One line of news for the user, through the current reporter (the CLI's: on stderr, so stdout
    stays clean for pipes)."""
    from . import report

    report.current().say(message)


def print_line(message: str) -> None:
    print(f"video2dream: {message}", file=sys.stderr, flush=True)
