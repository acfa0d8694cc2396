"""The benchmark scripts run, with tiny models and small arguments, and print their tables.

Logic only: the figures they print are never asserted on here (see README, Benchmarks).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


# A hang detector, not a speed limit: a busy 2-core CI machine can take minutes for what takes seconds.
TIMEOUT = 1200


def bench(script: str, *args: str, timeout: int = TIMEOUT) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_bench_interrogate_matches_the_package() -> None:
    # The label cache's first-vs-second start is left out: a fresh cache takes ~30 s to build.
    out = bench("bench_interrogate.py", "--frames", "2", "--modes", "fast,classic", "--no-cache-bench")
    assert "package per image" in out
    for mode in ("fast", "classic"):
        assert any(line.startswith(mode) and line.rstrip().endswith("2/2") for line in out.splitlines())


def test_bench_run_loads_each_model_once_per_stage() -> None:
    out = bench("bench_run.py", "--seconds", "2")
    assert "every model loaded once per stage" in out
    assert "generate" in out and "StableDiffusionXLPipeline x1" in out


def test_bench_painter_variants() -> None:
    out = bench("bench_painter.py", "--size", "64", "--steps", "2", "--batch", "1", "--repeat", "1",
                "--variants", "plain,tune,preview-vae,refiner,weighting,controlnet")
    assert "preview-vae" in out and "tune" in out
    assert "refiner" in out and "weighting" in out and "controlnet" in out


def test_bench_gpu_logic_with_tiny_models() -> None:
    out = bench("bench_gpu.py", "--tiny", "--frames", "1", "--batches", "1", "--size", "64",
                "--e2e-seconds", "1", "--parts", "generate,run")
    assert "generate stage, batch 1" in out and "run end to end, 4-step turbo preset" in out


def test_bench_morph_reports_its_ratio() -> None:
    out = bench("bench_morph.py", "--keyframes", "2", "--inbetweens", "2", "--repeat", "1", "--batch-size", "2")
    assert "2 in-betweens" in out and "loop wall / model time" in out


def test_bench_ray_local_vs_one_actor() -> None:
    pytest.importorskip("ray.data")
    out = bench("bench_ray.py", "--frames", "2", "--size", "64", "--steps", "1", "--variants", "local,ray1",
                "--limit", "0")
    assert "ray1" in out and "x local's wall" in out and "dreams identical across variants" in out
