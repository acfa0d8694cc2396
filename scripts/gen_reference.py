"""Write docs/reference/settings.md and docs/reference/cli.md from the code (see video2dream/reference.py).

    python scripts/gen_reference.py
"""

from __future__ import annotations

from pathlib import Path

from video2dream.reference import write

if __name__ == "__main__":
    for path in write(Path(__file__).resolve().parent.parent / "docs" / "reference"):
        print(f"wrote {path}")
