"""--backend ray on a cluster without a shared disk: three nodes simulated here (ray.cluster_utils.Cluster:
a head without CPUs and two 1-CPU nodes). The units' input pictures travel with them (an audit hook in
every Ray worker fails any open under the run folders), units spread over the nodes, and a node lost
mid-run loses nothing and runs no committed unit again; with no node left the command fails in one line.

The tests run in this order and share the cluster: the last removes its nodes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, cli, make_clip

pytestmark = pytest.mark.slow

UNITS = 12


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-cluster")


@pytest.fixture(scope="module")
def cluster(base: Path):
    """The cluster, and this process its driver: every Ray worker it starts refuses to open a path
    under base/runs (where the run folders are)."""
    import logging

    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    forbidden = str(base / "runs")
    (base / "runs").mkdir()
    (base / "log").mkdir()

    def no_run_folder() -> None:  # runs in every worker process of this driver's job
        import sys

        def audit(event: str, args: tuple) -> None:
            if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(args[0]))
                if path == forbidden or path.startswith(forbidden + os.sep):
                    raise RuntimeError(f"a Ray worker opened {path} in the run folder")

        sys.addaudithook(audit)

    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "OMP_NUM_THREADS")}
    # The nodes' workers import video2dream and the fake painter (tests/); one torch thread each.
    os.environ.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"worker_process_setup_hook": no_run_folder,
                          "env_vars": {"FAKE_PAINTER_LOG": str(base / "log"), "FAKE_PAINTER_LATENCY": "0.3"}})
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_full_run_on_the_cluster_never_opens_the_run_folder(cluster, base: Path, one_torch_thread) -> None:
    """caption, paint and in-betweens on two nodes: the actors get every picture from the driver."""
    clip = make_clip(base / "clip.mp4", "testsrc2=size=64x64:rate=25:duration=1",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p"))
    run = base / "runs" / "full"
    assert cli("run", clip, "-o", run, "--preset", "tiny", "--fps", "3", "--backend", "ray", "--workers", "2",
               "--strength", "0.5", "--transition", "morph", "--inbetweens", "1", "--batch-size", "1") == 0
    frames = sorted(p.name for p in (run / "frames").glob("*.png"))
    assert len(frames) == 3
    assert sorted(p.name for p in (run / "dreams").glob("*.png")) == frames
    assert len(list((run / "morphs").glob("*.png"))) == len(frames) - 1
    # ...and the audit hook is there: a worker of this job that opens a frame fails.
    import ray

    peek = ray.remote(num_cpus=1)(lambda path: open(path, "rb").close())  # noqa: SIM115
    with pytest.raises(ray.exceptions.RayTaskError, match="opened"):
        ray.get(peek.remote(str(run / "frames" / frames[0])))


def fake_units(run: Path, tag: str, count: int = UNITS) -> list:
    """Paint units, each reading its own frame (a 64x64 PNG in run/frames)."""
    from PIL import Image

    from video2dream.units import Unit, paint_params

    (run / "frames").mkdir(parents=True)
    units = []
    for k in range(1, count + 1):
        name = f"{k:06d}.png"
        Image.new("RGB", (64, 64), (k * 7 % 256, 50, 200)).save(run / "frames" / name)
        params = {**paint_params("p", "", k, (64, 64), 1, 5.0, 0.5, None), "tag": tag}
        units.append(Unit(name, "paint", (f"frames/{name}",), params, "key"))
    return units


def backend_and_settings():
    from fake_painter import FakePainter

    from video2dream.backends import get
    from video2dream.settings import resolve

    backend = get("ray")
    backend.inner = FakePainter
    return backend, resolve(preset="tiny", overrides={"backend": "ray", "workers": 2, "generate": {"batch_size": 1}})


def executions(base: Path, tag: str) -> list[tuple[str, int, str]]:
    """(unit, when it started, node) of each execution the fake painter logged."""
    out = []
    for p in (base / "log").glob(f"{tag}.*"):
        _, unit, stem, when, node = p.name.split(".", 4)
        out.append((f"{unit}.{stem}", int(when), node))
    return out


def test_node_lost_mid_run_loses_nothing_and_repeats_no_committed_unit(cluster, base: Path) -> None:
    import time

    from PIL import Image, ImageOps

    c, nodes = cluster
    run = base / "runs" / "node-lost"
    units = fake_units(run, "lost")
    backend, settings = backend_and_settings()
    committed: dict[str, int] = {}  # unit -> when its result was committed
    (run / "dreams").mkdir()
    removed = None
    for done in backend.execute(run, units, settings):
        for unit, painted in done:
            assert unit.name not in committed, f"{unit.name} came back twice"
            tmp = run / "dreams" / f".tmp-{unit.name}"
            painted.image.save(tmp)
            tmp.rename(run / "dreams" / unit.name)
            committed[unit.name] = time.time_ns()
        if len(committed) >= 3 and removed is None:
            removed = nodes[1]
            c.remove_node(removed)  # its actor dies with it, maybe mid-unit
    assert removed is not None
    assert sum(pool.lost for pool in backend.pools.values()) >= 1, "no worker was lost with the node"
    assert sorted(committed) == [u.name for u in units]
    for unit in units:  # each dream made from its own frame, sent by the driver
        with Image.open(run / "frames" / unit.name) as frame, Image.open(run / "dreams" / unit.name) as dream:
            assert dream.tobytes() == ImageOps.invert(frame.convert("RGB")).tobytes()
    ran = executions(base, "lost")
    assert {n for _, _, n in ran} >= {nodes[0].node_id, removed.node_id}, "the units did not spread"
    assert all(when < committed[name] for name, when, _ in ran), "a committed unit ran again"
    again = [name for name, _, _ in ran if sum(1 for n, _, _ in ran if n == name) > 1]
    assert len(ran) == UNITS + len(set(again)) and len(ran) <= UNITS + 2 * 2  # at most its batches in flight


def test_a_second_kind_that_does_not_fit_beside_the_first_shares_its_pool(cluster, base: Path) -> None:
    """One backend (a telephone chain's) keeps a pool per kind; when the cluster cannot hold the next
    kind's actors beside the first's (here both CPUs are taken), the first pool's actors serve that
    kind too (their models stay loaded) instead of the command waiting forever."""
    import threading

    from video2dream.units import Unit

    run = base / "runs" / "two-kinds"
    paint = fake_units(run, "kinds", count=4)
    morph = [Unit(f"{k:06d}-{k + 1:06d}_01.png", "morph", (u.inputs[0], paint[k].inputs[0]),
                  {**u.params, "t": 0.5, "b": u.params}, "key") for k, u in enumerate(paint[:-1], start=1)]
    backend, settings = backend_and_settings()
    assert sum(len(d) for d in backend.execute(run, paint, settings)) == 4
    got: list[int] = []
    worker = threading.Thread(target=lambda: got.append(sum(len(d) for d in backend.execute(run, morph, settings))),
                              daemon=True)
    worker.start()
    worker.join(timeout=300)  # a hang detector, not a speed limit
    assert got == [3]
    assert sorted(json.loads(k)[1] for k in backend.pools) == ["morph", "paint"]
    assert len({id(p) for p in backend.pools.values()}) == 1  # one pool, both kinds


def test_no_node_left_fails_in_one_line(cluster, base: Path) -> None:
    from video2dream.errors import UserError

    c, nodes = cluster
    run = base / "runs" / "none-left"
    units = fake_units(run, "none")
    backend, settings = backend_and_settings()
    got = 0
    with pytest.raises(UserError, match="no Ray node left") as e:
        for done in backend.execute(run, units, settings):
            got += len(done)
            for node in [n for n in nodes if n in c.worker_nodes]:
                c.remove_node(node)
    assert got < UNITS and "\n" not in str(e.value)
    shutil.rmtree(run)
