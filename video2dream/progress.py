"""Progress bars (tqdm on stderr, shown only on a terminal) and short status lines."""

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
    """One line of news for the user, on stderr so stdout stays clean for pipes."""
    print(f"video2dream: {message}", file=sys.stderr, flush=True)
