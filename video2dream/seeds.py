"""Seeds a user chooses: a row's pinned seed (prompts.csv's optional `seed` column), and the seeds
of a frame's variants (`generate --variants K`).

A pinned seed wins over the seed rule (--seed, --seed-mode) for its frame only. A frame's K-th
variant is painted with (its seed + K * VARIANT_STEP) mod 2**63: a large odd step, so that the
candidates of neighbouring frames (whose rule seeds differ by 1) never share a seed, and every
candidate's seed is a valid one (0 to 2**63 - 1)."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .settings import MAX_SEED

SEED_COLUMN = "seed"
VARIANT_STEP = 0x9E3779B97F4A7C15 % 2**63  # the golden ratio's 64 bits (odd), below 2**63
SEED_RANGE = 2**63


def pinned_seed(cell: object, path: Path, row: int) -> int | None:
    """A `seed` cell as a seed; None when empty. row: its row in the file (the header is row 1)."""
    text = str(cell if cell is not None else "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        try:  # a spreadsheet may write 12 as 12.0
            number = float(text)
            value = int(number) if number.is_integer() and abs(number) < 2**53 else -1
        except (ValueError, OverflowError):
            value = -1
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{path}, row {row} (the header is row 1): seed {text!r} is not a whole number from 0 "
                        f"to {MAX_SEED}; fix it, or empty the cell to use the seed rule")
    return value


def variant_seed(seed: int, k: int) -> int:
    """The seed of a frame's k-th variant (k from 1): seed + k * VARIANT_STEP, mod 2**63."""
    return (seed + k * VARIANT_STEP) % SEED_RANGE
