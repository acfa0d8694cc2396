"""A fake painter for the Ray cluster tests and scripts/bench_cluster.py: a Backend that sleeps a fixed
time per unit and returns a deterministic picture made from the unit's input (the pictures that came
with it, never the run folder). Imported by the Ray actors (tests/ is on their PYTHONPATH)."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from PIL import Image, ImageOps

from video2dream.backends.base import Backend, Done, Painted
from video2dream.units import Unit

LATENCY = float(os.environ.get("FAKE_PAINTER_LATENCY", "0.2"))  # seconds per unit
LOG = os.environ.get("FAKE_PAINTER_LOG")  # a folder outside the run folder: one file per execution


class FakePainter(Backend):
    name = "fake"

    def load(self, kind: str, settings) -> None:
        pass

    def execute(self, root: Path, units: list[Unit], settings, wanted: Callable[[Unit], bool] | None = None, *,
                pictures: Mapping[str, bytes] | None = None) -> Iterator[list[Done]]:
        for unit in units:
            if LOG:
                import ray

                node = ray.get_runtime_context().get_node_id()
                (Path(LOG) / f"{unit.params.get('tag', '')}.{unit.name}.{time.time_ns()}.{node}").touch()
            time.sleep(LATENCY)
            if unit.inputs:
                with Image.open(io.BytesIO(pictures[unit.inputs[0]])) as im:
                    picture = ImageOps.invert(im.convert("RGB"))
            else:
                picture = Image.new("RGB", (64, 64), (unit.params.get("seed", 0) % 256, 0, 0))
            yield [(unit, Painted(picture, "fake", "fake"))]
