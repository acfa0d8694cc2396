"""--backend ray: the same prompts and dreams as --backend local, a worker killed mid-run, the driver
killed and the command rerun, and the one-line error without Ray.

One local Ray instance (2 CPUs) serves the whole module: commands run in this process use it, and
commands run as subprocesses join it through RAY_ADDRESS (the path of a cluster's driver)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, cli, make_clip, one_line_error

pytestmark = pytest.mark.slow

FRAMES = 6  # 2 s at 3 fps: enough units that a kill lands while some are still to paint
MODEL_FLAGS = ("--batch-size", "1")  # batches of one: the same pictures whatever the worker


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance for the module; its address, for subprocesses to join."""
    import logging

    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # One torch thread in every actor, as in this process (one_torch_thread) and in the drivers it
    # starts: on a CPU another thread count changes the last bits of a picture. The actors inherit it
    # from the raylet, which inherits this environment; Ray would otherwise give an actor as many
    # threads as its CPUs.
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ctx.address_info["address"]
    ray.shutdown()
    if threads is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = threads


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> Path:
    base = tmp_path_factory.mktemp("ray")
    clip = make_clip(base / "clip.mp4", "testsrc2=size=320x240:rate=25:duration=2",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    run = base / "extracted"
    assert cli("extract", clip, "-o", run, "--preset", "tiny", "--fps", "3") == 0
    assert len(list((run / "frames").glob("*.png"))) == FRAMES
    return run


@pytest.fixture(scope="module")
def reference(extracted: Path) -> Path:
    """The local backend's prompts and dreams, batch size 1."""
    run = extracted.parent / "local"
    shutil.copytree(extracted, run)
    assert cli("interrogate", run, *MODEL_FLAGS) == 0
    assert cli("generate", run, *MODEL_FLAGS) == 0
    return run


def copy_of(source: Path, name: str, dreams: bool = False) -> Path:
    run = source.parent / name
    shutil.copytree(source, run, ignore=None if dreams else shutil.ignore_patterns("dreams"))
    return run


def dreams(run: Path, folder: str = "dreams") -> dict[str, str]:
    """Each picture's SHA-256 (a failed comparison of raw bytes would take pytest minutes to show)."""
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run / folder).glob("*.png"))}


def command(*args: str | Path, address: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_ADDRESS=address)
    return subprocess.Popen([sys.executable, "-m", "video2dream", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_dreams(run: Path, proc: subprocess.Popen, count: int = 1, timeout: float = 600) -> int:
    """Wait until at least count dreams are committed (a hang detector, not a speed limit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(committed(run))
        if done >= count:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no dream within {timeout} s")


def committed(run: Path) -> list[Path]:
    """The dreams written (not the temporaries of one being written)."""
    return [p for p in (run / "dreams").glob("*.png") if p.stem.isdigit()] if (run / "dreams").is_dir() else []


def map_workers() -> list:
    """The Ray actors' processes (ray::UnitWorker)."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any("UnitWorker" in part for part in p.info["cmdline"] or ()):
            found.append(p)
    return found


def test_ray_backend_writes_what_local_writes_a_killed_worker_replaced(cluster: str, extracted: Path,
                                                                      reference: Path, capsys) -> None:
    run = copy_of(extracted, "ray-same")
    assert cli("interrogate", run, "--backend", "ray", "--workers", "1", *MODEL_FLAGS) == 0
    assert (run / "prompts.csv").read_bytes() == (reference / "prompts.csv").read_bytes()
    assert "on 1 actor(s)" in capsys.readouterr().err
    # generate, with one of its two actors killed once the first dream is in: Ray restarts it and
    # runs its unit again; no half-written dream, the same pictures.
    killed: list[int] = []
    killer = threading.Thread(target=kill_a_worker, args=(run, killed), daemon=True)
    killer.start()
    assert cli("generate", run, "--backend", "ray", "--workers", "2", *MODEL_FLAGS) == 0
    killer.join(timeout=60)
    assert killed, "no Ray worker was killed mid-run"
    assert "on 2 actor(s)" in capsys.readouterr().err
    assert dreams(run) == dreams(reference) and len(dreams(run)) == FRAMES
    assert not [p for p in (run / "dreams").iterdir() if ".tmp-" in p.name]
    # Current now: nothing is sent to the cluster again.
    assert cli("generate", run, "--backend", "ray") == 0
    assert "0 dream(s) painted" in capsys.readouterr().err


def kill_a_worker(run: Path, killed: list[int]) -> None:
    """Once the first dream is committed and some are still to paint, SIGKILL one actor's process."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not committed(run):
        time.sleep(0.02)
    if len(committed(run)) >= FRAMES:
        return
    for victim in map_workers()[:1]:
        victim.send_signal(signal.SIGKILL)
        killed.append(victim.pid)


def test_driver_killed_then_rerun_paints_only_the_rest(cluster: str, reference: Path) -> None:
    run = copy_of(reference, "ray-driver-killed")
    proc = command("generate", run, "--backend", "ray", "--workers", "1", *MODEL_FLAGS, address=cluster)
    try:
        wait_for_dreams(run, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in committed(run)}
    assert 0 < len(kept) < FRAMES, "the kill should land mid-run"
    assert cli("generate", run, "--backend", "ray", "--workers", "1", *MODEL_FLAGS) == 0
    assert dreams(run) == dreams(reference)
    assert {n: (p.stat().st_ino, p.stat().st_mtime_ns) for n in kept if (p := run / "dreams" / n)} == kept


def test_without_ray_one_line_error(extracted: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    run = copy_of(extracted, "no-ray")
    for name in ("ray", "ray.data"):
        monkeypatch.setitem(sys.modules, name, None)  # `import ray` fails as where it is not installed
    one_line_error(cli("interrogate", run, "--backend", "ray"), capsys.readouterr().err, "Ray",
                   "pip install 'video2dream[ray]'")
    assert not (run / "prompts.csv").exists()


def test_token_limits_as_the_painter_counts_them(one_torch_thread) -> None:
    """The driver counts what SDXL's 77 tokens cut from its tokenizer alone, as the loaded painter does."""
    pytest.importorskip("ray")
    from video2dream.backends import get
    from video2dream.settings import resolve
    from video2dream.units import Unit, paint_params

    settings = resolve(preset="tiny")
    units = [Unit(f"00000{k}.png", "paint", (), paint_params(prompt, "", k, (64, 64), 1, 5.0, None, None), "k")
             for k, prompt in enumerate(["a red cat", "a red cat, " * 40, "ünïcödé 🐈 " * 60], start=1)]
    ray_cut = get("ray").token_limits(units, settings)
    assert set(ray_cut) == {"000002.png", "000003.png"}
    assert ray_cut == get("local").token_limits(units, settings)


def test_in_betweens_on_ray_are_the_local_ones(cluster: str, reference: Path) -> None:
    """The morph stage's units run on the actors like the dreams: the same in-betweens, byte for byte."""
    local = copy_of(reference, "morph-local", dreams=True)
    remote = copy_of(reference, "morph-ray", dreams=True)
    flags = ("--inbetweens", "1", *MODEL_FLAGS)
    assert cli("morph", local, *flags) == 0
    assert cli("morph", remote, "--backend", "ray", "--workers", "2", *flags) == 0  # 1 CPU, 1 thread each
    made = dreams(local, "morphs")
    assert len(made) == FRAMES - 1
    assert dreams(remote, "morphs") == made


def test_unreachable_ray_address_is_one_line_at_once(tmp_path: Path) -> None:
    """Nothing listening at --ray-address: one line naming it (ray.init would retry for minutes,
    printing Ray's warnings). A fresh process whose wait is bounded: no Ray instance is needed."""
    import socket

    run = tmp_path / "run"
    clip = make_clip(tmp_path / "clip.mp4", "testsrc2=size=64x48:rate=10:duration=1",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "video2dream", "interrogate", str(run), "--backend", "ray",
                          "--ray-address", address], capture_output=True, text=True, timeout=120,
                         env=dict(env, PYTHONPATH=str(ROOT)))
    one_line_error(out.returncode, out.stderr, f"cannot reach the Ray cluster at {address}", "ray start --head")
    assert not (run / "prompts.csv").exists()


def test_joining_a_cluster_shows_no_ray_log_notice(cluster: str) -> None:
    """Ray's core worker says "logging.cc ... Set ray log level" as it starts: not among the tool's lines."""
    code = ("from video2dream.backends.ray import connect\nfrom video2dream.settings import resolve\n"
            f"connect(resolve(overrides={{'ray_address': {cluster!r}}}))\nprint('joined')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0 and out.stdout.strip() == "joined", out
    assert "logging.cc" not in out.stderr and "Set ray log level" not in out.stderr, out.stderr
