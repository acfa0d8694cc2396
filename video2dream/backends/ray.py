"""The Ray backend: units run on a Ray cluster (several GPUs in one box, or many machines).

The units go in batches to a pool of actors (one per GPU), each of which builds a LocalBackend once
(its models load once per actor) and runs each batch through the same code as `--backend local`, so
the pictures and prompts are the same. The pool lives for the whole command and serves every kind
of unit: a telephone chain's steps, a video's rounds reuse its actors and their loaded models. The actors send their
results back as plain data (raw pixels, texts); this process (the driver) commits them as they
arrive and holds the run folder's lock: the one writer stays the one writer, prompts.csv is never
written by two processes, and a worker killed mid-unit leaves nothing half written (Ray restarts
it and runs its unit again).

Where: no address starts a local Ray instance for the command (stopped when it ends);
settings.ray_address (--ray-address) or Ray's own RAY_ADDRESS joins a running cluster, whose
every node must see the run folder at the same path (checked before any unit runs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..progress import say
from ..units import Unit
from .base import Backend, Caption, Done, Painted, register

if TYPE_CHECKING:
    from ..settings import Settings

INSTALL = "pip install 'video2dream[ray]'"
# A worker killed mid-unit (a lost node, the OOM killer) is restarted and its unit run again, this
# many times; a unit that kills every worker it meets is then reported instead of retried forever.
RETRIES = 3
CHECK_TIMEOUT = 120  # seconds for every node to answer the shared-folder check (a task may wait for a worker)


def import_ray() -> Any:
    """ray, with Ray Data; a one-line error when it is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra installs it: ray[data])
    except ImportError as e:
        raise UserError(f"{{backend}} ray needs Ray, which is not installed here ({e}); install it with "
                        f"`{INSTALL}`, or use {{backend}} local", paths=("backend",)) from None
    return ray


def connect(settings: Settings) -> Any:
    """The ray module, connected: to the instance already up in this process (an earlier stage's,
    or a caller's), to settings.ray_address or RAY_ADDRESS, else to a local instance started now
    (Ray stops it when this process exits)."""
    ray = import_ray()
    if ray.is_initialized():
        _quiet_ray_data(ray)
        return ray
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the core worker's C++ notices (and that it read this)
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if address:
        _check_reachable(address)
    try:
        if address:
            with _without_ray_log_notice():
                ray.init(address=address, **quiet)
        else:
            started = time.perf_counter()
            with _without_ray_log_notice():
                ray.init(include_dashboard=False, **quiet)
            say(f"ray: started a local Ray instance in {time.perf_counter() - started:.1f} s "
                "(no --ray-address or RAY_ADDRESS); it stops when this command ends")
    except (ConnectionError, ValueError, RuntimeError) as e:
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        fix = CLUSTER_FIX if address else "check that Ray works here (`ray start --head`), or use --backend local"
        raise UserError(f"cannot reach {where} ({detail}); {fix}") from None
    finally:
        _restore(handlers)
    _quiet_ray_data(ray)
    return ray


CLUSTER_FIX = ("start it with `ray start --head` (and `ray start --address HEAD:6379` on the other machines), "
               "or leave out --ray-address and unset RAY_ADDRESS for a local instance")


def _check_reachable(address: str) -> None:
    """ray.init retries an address where nothing listens for minutes, printing Ray's warnings: one
    short TCP connection to it says so at once. ("auto" and addresses without a port are Ray's to find.)"""
    from urllib.parse import urlsplit

    if "://" in address and not address.startswith("ray://"):
        return
    try:
        where = urlsplit(address if address.startswith("ray://") else f"//{address}")
        host, port = where.hostname, where.port
    except ValueError:
        return  # not host:port: ray.init says what is wrong with it
    if not host or not port:
        return
    from ..models.hub import unreachable

    why = unreachable(host, port)  # a short connection (and name lookup) with a timeout
    if why is not None:
        raise UserError(f"cannot reach the Ray cluster at {address} ({why}); {CLUSTER_FIX}")


RAY_LOG_NOTICE = re.compile(r"logging\.cc:\d+\]?:? Set ray log level")


@contextlib.contextmanager
def _without_ray_log_notice() -> Iterator[None]:
    """Ray's core worker writes "logging.cc: Set ray log level from environment variable ..." to the
    process's stderr (fd 2) as it starts: the lines written meanwhile are passed on without it."""
    import sys
    import tempfile

    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not RAY_LOG_NOTICE.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _restore(handlers: dict) -> None:
    """Ray's core worker installs its own SIGTERM handler (it aborts the process): put back the
    command's, which stops the run as Ctrl-C does, keeping what was committed."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)


def _quiet_ray_data(ray: Any) -> None:
    """Ray Data draws its own bars and logs each execution: the stage's one bar says it all."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.verbose_progress = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # a failure is raised here, in one line
    logging.getLogger("ray").setLevel(logging.ERROR)


def check_shared_folder(ray: Any, root: Path) -> None:
    """Every other node of the cluster reads back a token written under root/.video2dream/: the run
    folder must be the same shared folder there (the actors read frames from it by path)."""
    import secrets

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ..runfolder import STATE, temp_path, write_text

    here = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if not nodes:
        return  # one node, this one: it sees what this process sees
    token = secrets.token_hex(16)
    path = temp_path(root / STATE / "ray-check")  # a temporary's name: a killed run's is cleaned up
    write_text(path, token)
    try:
        read = ray.remote(num_cpus=0, max_retries=0)(_read_token)
        refs = [read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(path)) for n in nodes]
        try:
            answers = ray.get(refs, timeout=CHECK_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise UserError(f"the Ray cluster's nodes did not answer within {CHECK_TIMEOUT} s whether they see "
                            f"the run folder {root}; check `ray status`, then rerun") from None
    finally:
        path.unlink(missing_ok=True)
    blind = [f"{n.get('NodeManagerHostname', '?')} ({n['NodeManagerAddress']}): {got}"
             for n, got in zip(nodes, answers, strict=True) if got != token]
    if blind:
        raise UserError(f"the run folder {root} is not visible from {len(blind)} Ray node(s): {'; '.join(blind)}; "
                        "put the run folder on storage every node mounts at the same path (NFS, a cluster "
                        "file system), or run on one machine without --ray-address")


def _read_token(path: str) -> str:
    """On a node: the token file's text, or why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"


class WorkerError(Exception):
    """A UserError raised in a worker (a model that cannot load, a bad setting), as plain text:
    the driver raises it again as a UserError."""


class UnitWorker:
    """The actor: one LocalBackend, a batch of units per call. It lives for the whole command (see
    _POOL) and serves every kind: each kind's models load on its first batch, once (the model cache
    loads again only for a call whose settings name other models)."""

    def __init__(self, settings: Settings, kind: str) -> None:
        from .local import LocalBackend

        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.backend = LocalBackend()
        self.failed: dict[str, str] = {}
        self._load(kind, settings)

    def _load(self, kind: str, settings: Settings) -> None:
        try:
            self.backend.load(kind, settings)  # the model cache's: loads only models it does not hold
            self.failed.pop(kind, None)
        except UserError as e:
            # Raised with the batch, as a task's error: an actor that dies in __init__ is retried
            # and reported by Ray with tracebacks on the command's stderr.
            self.failed[kind] = f"on {self.name}: {e}"

    def run(self, texts: list[str], settings: Settings, root: str) -> list[dict[str, Any]]:
        units = [Unit.from_json(json.loads(text)) for text in texts]
        kind = units[0].kind
        self._load(kind, settings)
        if kind in self.failed:
            raise WorkerError(self.failed[kind])
        out: list[dict[str, Any]] = []
        try:
            for done in self.backend.execute(Path(root), units, settings):
                out += [{"name": unit.name, "worker": self.name, **to_row(result)} for unit, result in done]
        except UserError as e:
            raise WorkerError(f"on {self.name}: {e}") from None
        return out


# One pool of actors for the whole command, for every kind of unit (a telephone chain's caption and
# paint steps, a video's rounds): their models load once. One pool, not one per kind: actors of two
# pools would each ask for the GPU (or the CPUs) and the second would wait forever for the first.
# pipeline.library_call releases it when the command ends.
_POOL: dict[str, Any] = {"shape": None, "actors": []}


def _actors(ray: Any, settings: Settings, kind: str, count: int, cpus: float, gpus: float) -> list[Any]:
    """count actors of the command's pool (made now if there are fewer, or none of this shape)."""
    if _POOL["shape"] != (cpus, gpus):
        release_pools()
    actors = _POOL["actors"]
    worker = ray.remote(UnitWorker).options(num_cpus=cpus, num_gpus=gpus or None, max_restarts=RETRIES,
                                            max_task_retries=RETRIES)
    actors += [worker.remote(settings, kind) for _ in range(count - len(actors))]
    _POOL.update(shape=(cpus, gpus), actors=actors)
    return actors[:count]


def release_pools() -> None:
    """End the command's actors (their models leave the GPUs)."""
    import sys

    ray = sys.modules.get("ray")
    actors = _POOL["actors"]
    _POOL.update(shape=None, actors=[])
    if ray is not None and ray.is_initialized():
        for actor in actors:
            with contextlib.suppress(Exception):  # an actor already gone
                ray.kill(actor)


def to_row(result: Painted | Caption) -> dict[str, Any]:
    """A result as plain columns: a picture as its raw pixels (lossless, no encode on the worker)."""
    if isinstance(result, Painted):
        im = result.image
        return {"mode": im.mode, "width": im.width, "height": im.height, "pixels": im.tobytes(),
                "sampler": result.sampler, "model": result.model}
    return {"caption": result.caption, "prompt": result.prompt, "negative_prompt": result.negative_prompt}


def from_row(kind: str, row: dict[str, Any]) -> Painted | Caption:
    from ..units import KINDS

    if KINDS[kind].result == "Painted":  # a dream or an in-between
        from PIL import Image

        size = (int(row["width"]), int(row["height"]))
        return Painted(Image.frombytes(str(row["mode"]), size, bytes(row["pixels"])), str(row["sampler"]),
                       str(row["model"]))
    return Caption(str(row["caption"]), str(row["prompt"]), str(row["negative_prompt"]))


def pool_shape(ray: Any, settings: Settings, units: int) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor): one actor per GPU (or --workers), on the CPU one per
    node sharing its cores (or --workers); never more than the cluster can hold at once, nor than
    there are units (each actor loads the models)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus and settings.device != "cpu":
        return max(1, min(settings.workers or gpus, gpus, units)), 1.0, 1.0
    nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
    cpus = int(sum(nodes)) or 1
    actors = max(1, min(settings.workers or len(nodes) or 1, cpus, units))
    per_node = -(-actors // max(1, len(nodes)))
    return actors, max(1.0, float(min(nodes or [1]) // per_node)), 0.0


@register("ray")
class RayBackend(Backend):
    def __init__(self, models=None) -> None:
        super().__init__(models)
        import_ray()  # a missing extra fails before anything is planned or written
        self.done_by: Counter[str] = Counter()  # worker -> units it ran (for the summary line)

    @classmethod
    def check_ready(cls, settings: Settings) -> None:
        """Ray installed (`run` checks it before extract writes anything)."""
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UserError(f"{{backend}} ray needs Ray, which is not installed here; install it with `{INSTALL}`, "
                            "or use {backend} local", paths=("backend",))

    def load(self, kind: str, settings: Settings) -> None:
        """Reach the cluster, and a model hub that does not answer now (the models load in the actors)."""
        from ..models.cache import ModelCache

        connect(settings)
        if kind in ("paint", "morph"):
            g = settings.generate
            ModelCache._reachable(("SDXL model", g.model), ("VAE", g.vae), ("preview VAE", g.preview_vae))
        else:
            i = settings.interrogate
            ModelCache._reachable(("caption model", i.caption_model),
                                  ("CLIP model", i.clip_model if i.mode != "caption" else None))

    def token_limits(self, units: list[Unit], settings: Settings) -> dict[str, tuple[str, str]]:
        """From the model's first tokenizer alone, here (the painter's own rule, without its weights)."""
        tok = _tokenizer(settings.generate.model)
        if tok is None:
            return {}
        from types import SimpleNamespace

        from ..models.painter import Painter

        holder = SimpleNamespace(pipe=SimpleNamespace(tokenizer=tok))  # what Painter.token_limit reads
        limits = {u.name: Painter.token_limit(holder, u.params["prompt"]) for u in units if u.kind == "paint"}
        return {n: cut for n, cut in limits.items() if cut[1]}

    def execute(self, root: Path, units: list[Unit], settings: Settings,
                wanted: Callable[[Unit], bool] | None = None) -> Iterator[list[Done]]:
        if not units:
            return
        ray = connect(settings)
        root = Path(root).resolve()  # the actors find the run folder by the same absolute path
        check_shared_folder(ray, root)
        kind = units[0].kind
        actors, cpus, gpus = pool_shape(ray, settings, len(units))
        say(f"ray: {len(units)} unit(s) on {actors} actor(s) ({'1 GPU' if gpus else f'{cpus:g} CPU'} each)")
        by_name = {u.name: u for u in units}
        size = units[0].spec.batch_size(settings)
        texts = [json.dumps(u.to_json()) for u in units]
        chunks = [texts[i:i + size] for i in range(0, len(texts), size)]
        from ray.util import ActorPool

        pool = ActorPool(_actors(ray, settings, kind, actors, cpus, gpus))
        try:
            for rows in pool.map_unordered(lambda a, chunk: a.run.remote(chunk, settings, str(root)), chunks):
                done = []
                for row in rows:
                    self.done_by[row["worker"]] += 1
                    unit = by_name[row["name"]]
                    if wanted is None or wanted(unit):
                        done.append((unit, from_row(kind, row)))
                if done:
                    yield done
        except Exception as e:  # noqa: BLE001 - a worker's UserError comes back wrapped by Ray
            text = _worker_error(e)
            if text is None:
                raise
            raise UserError(text) from None
        say("ray: " + ", ".join(f"{w} ran {n}" for w, n in sorted(self.done_by.items())))
        self.done_by.clear()


def _worker_error(e: BaseException) -> str | None:
    """The text of a WorkerError somewhere in the chain of what Ray raised, if any."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        cause = getattr(x, "cause", None)
        if isinstance(cause, WorkerError):
            return str(cause.args[0]) if cause.args else str(cause)
        if isinstance(x, WorkerError) and type(x) is WorkerError:
            return str(x.args[0]) if x.args else str(x)
        marker = f"{WorkerError.__module__}.WorkerError: "
        if marker in str(x):  # only in the text of a traceback Ray carried over
            return str(x).rsplit(marker, 1)[1].splitlines()[0]
        todo += [x.__cause__, x.__context__, cause if isinstance(cause, BaseException) else None]
    return None


def _tokenizer(model: str) -> Any:
    """The SDXL model's first tokenizer (its folder or hub id); None for a single checkpoint file."""
    from ..models import hub

    source = hub.resolve(model)
    if Path(source).is_file():
        return None
    from transformers import CLIPTokenizer

    with hub.loading("SDXL model", model):
        return CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
