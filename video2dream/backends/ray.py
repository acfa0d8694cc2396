"""The Ray backend: units run on a Ray cluster (several GPUs in one box, or many machines).

A pool of actors per model kind (its own share of a GPU: ray.caption_gpus, ray.paint_gpus), kept
for the command; each actor builds a LocalBackend once (its models load once per actor) and runs
each batch through the same code as `--backend local`, so the pictures and prompts are the same.
The driver sends each batch with its input pictures as bytes (read when the batch is sent, a few
batches in flight per actor: its memory stays flat), so no node needs the run folder. The actors
send their results back as plain data (raw pixels, texts); this process (the driver) commits them
as they arrive and holds the run folder's lock: the one writer stays the one writer, and a worker
lost mid-unit (its node gone, its process killed) leaves nothing half written: its batches go to
the other actors, and a new actor is asked for in its place. A result that came back is never
asked for again.

Where: no address starts a local Ray instance for the command (stopped when it ends);
settings.ray_address (--ray-address) or Ray's own RAY_ADDRESS joins a running cluster (any
cluster: no shared disk; ray.shared_folder: true checks that every node sees the run folder).
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
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import UserError
from ..progress import say
from ..settings import worker_range
from ..units import KINDS, Unit
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
    """The actor: one inner backend (LocalBackend: its models loaded once), a batch of units per
    call, their input pictures given as bytes: it never opens the run folder (a node needs none)."""

    def __init__(self, settings: Settings, kind: str, inner: type[Backend] | None = None) -> None:
        from .local import LocalBackend

        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.backend = (inner or LocalBackend)()
        self.failed: str | None = None
        try:
            self.backend.load(kind, settings)
        except UserError as e:
            # Told by ready(), as a task's result: an actor that dies in __init__ is retried and
            # reported by Ray with tracebacks on the command's stderr.
            self.failed = f"on {self.name}: {e}"

    def ready(self) -> str | None:
        """None once the models are loaded; else why they could not be."""
        return self.failed

    def run(self, units: list[dict[str, Any]], pictures: dict[str, bytes]) -> list[dict[str, Any]]:
        if self.failed:
            raise WorkerError(self.failed)
        batch = [Unit.from_json(u) for u in units]
        rows: list[dict[str, Any]] = []
        try:
            for done in self.backend.execute(Path("/"), batch, self.settings, pictures=pictures):
                rows += [{"name": unit.name, "worker": self.name, **to_row(result)} for unit, result in done]
        except UserError as e:
            raise WorkerError(f"on {self.name}: {e}") from None
        return rows


_BACKENDS: weakref.WeakSet[RayBackend] = weakref.WeakSet()  # the command's Ray backends, for release_pools


def release_pools() -> None:
    """End every pool of the command's Ray backends (their models leave the GPUs); pipeline.library_call
    calls it when the outermost library call ends."""
    for backend in list(_BACKENDS):
        backend.close()


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


class Shape(NamedTuple):
    """A pool's size and what each of its actors asks of a node."""
    fewest: int  # actors started at once
    most: int  # actors asked for: those beyond what the cluster holds wait (an autoscaler adds nodes)
    cpus: float
    gpus: float


def pool_shape(ray: Any, settings: Settings, kind: str, units: int) -> Shape:
    """One actor per GPU (per its share of one: ray.caption_gpus / ray.paint_gpus), or --workers (a
    count, or a range: an autoscaling pool); on the CPU one per node sharing its cores. Never more
    than there are units (each actor loads the models)."""
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    share = settings.ray.caption_gpus if kind == "caption" else settings.ray.paint_gpus
    asked = worker_range(settings.workers) if settings.workers is not None else None
    if gpus and share and settings.device != "cpu":
        fit = max(1, int(gpus // share))
        low, high = asked or (fit, fit)
        return Shape(max(1, min(low, units)), max(1, min(high, units)), settings.ray.cpus or 1.0, share)
    nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
    cpus = int(sum(nodes)) or 1
    low, high = asked or (len(nodes) or 1, len(nodes) or 1)
    low, high = max(1, min(low, units)), max(1, min(high, units))
    if asked is None or asked[0] == asked[1]:  # a fixed pool the cluster can hold at once
        low = high = max(1, min(high, int(cpus // settings.ray.cpus) if settings.ray.cpus else cpus))
    per_node = -(-low // max(1, len(nodes)))
    per_actor = settings.ray.cpus or max(1.0, float(min(nodes or [1]) // per_node))
    return Shape(low, high, per_actor, 0.0)


DEPTH = 2  # batches in flight per actor: one running, one waiting (its inputs already sent)
WAIT = 2.0  # seconds between looks at the cluster while no actor is ready


class Pool:
    """One kind's actors, kept by the backend for the whole command (a telephone chain's steps reuse
    them). The driver reads each batch's input pictures when it sends the batch, and keeps at most
    DEPTH batches per actor in flight: its memory stays flat however many units there are."""

    def __init__(self, ray: Any, kind: str, settings: Settings, shape: Shape, inner: type[Backend] | None) -> None:
        self.ray, self.kind, self.settings, self.shape, self.inner = ray, kind, settings, shape, inner
        self.actors: dict[Any, int] = {}  # ready actor -> batches in flight
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor still loading its models (or waiting for a node)
        self.cls: Any = None  # the actor class, made remote once
        self.lost = 0  # actors lost (a node gone, a worker killed)
        self.done_by: Counter[str] = Counter()  # worker -> units it ran (for the summary line)
        for _ in range(shape.most):
            self._start()

    def _start(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.cls is None:
                self.cls = self.ray.remote(UnitWorker).options(
                    num_cpus=self.shape.cpus, num_gpus=self.shape.gpus or None, max_restarts=0, max_task_retries=0)
            actor = self.cls.remote(self.settings, self.kind, self.inner)
        self.starting[actor.ready.remote()] = actor

    def size(self) -> int:
        return len(self.actors) + len(self.starting)

    def close(self) -> None:
        for actor in [*self.actors, *self.starting.values()]:
            self.ray.kill(actor)
        self.actors.clear()
        self.starting.clear()

    def run(self, root: Path, units: list[Unit], wanted: Callable[[Unit], bool] | None) -> Iterator[list[Done]]:
        from collections import deque

        ray = self.ray
        todo = deque(units)
        again: deque[list[Unit]] = deque()  # batches whose actor was lost: sent again first
        tries: Counter[str] = Counter()
        flight: dict[Any, tuple[Any, list[Unit]]] = {}  # run() ref -> (actor, batch)
        while todo or again or flight:
            if self.starting:  # actors up since the last look take batches now (not after the others' results)
                up, _ = ray.wait(list(self.starting), num_returns=len(self.starting), timeout=0)
                for ref in up:
                    if ref in self.starting:
                        self._started(ref)
            for actor in [a for a, n in self.actors.items() if n < DEPTH]:
                while self.actors.get(actor, DEPTH) < DEPTH:
                    batch = again.popleft() if again else self._next(todo, wanted)
                    if not batch:
                        break
                    flight[actor.run.remote([u.to_json() for u in batch], read_inputs(root, batch))] = (actor, batch)
                    self.actors[actor] += 1
            if not flight and not again and not todo:
                break
            waiting = list(flight) + list(self.starting)
            done, _ = ray.wait(waiting, num_returns=1, timeout=None if flight else WAIT)
            if not done:
                self._check_left(len(todo) + sum(map(len, again)))
                continue
            ref = done[0]
            if ref in self.starting:
                self._started(ref)
                continue
            actor, batch = flight.pop(ref)
            try:
                rows = ray.get(ref)
            except ray.exceptions.RayActorError:
                self._lose(actor)
                for u in batch:
                    tries[u.name] += 1
                    if tries[u.name] > RETRIES:
                        raise UserError(f"unit {u.name} was lost with its Ray worker {tries[u.name]} times (a "
                                        "node lost, or the worker killed, e.g. out of memory); what was done is "
                                        "kept: check `ray status` and the nodes' memory, then rerun") from None
                again.append(batch)
                continue
            except Exception as e:  # noqa: BLE001 - a worker's UserError comes back wrapped by Ray
                text = _worker_error(e)
                if text is None:
                    raise
                raise UserError(text) from None
            if actor in self.actors:
                self.actors[actor] -= 1
            by_name = {u.name: u for u in batch}
            finished = [(by_name[r["name"]], from_row(by_name[r["name"]].kind, r)) for r in rows]
            finished = [(u, r) for u, r in finished if wanted is None or wanted(u)]
            self.done_by.update(r["worker"] for r in rows)
            if finished:
                yield finished

    def _next(self, todo: Any, wanted: Callable[[Unit], bool] | None) -> list[Unit]:
        """The next batch from the front of todo: units still wanted (the others dropped), as
        LocalBackend batches them (up to --batch-size sharing one model call's parameters)."""
        from .local import _batch

        size = KINDS[todo[0].kind].batch_size(self.settings) if todo else 1
        head: list[Unit] = []
        while todo and len(head) < size:
            unit = todo.popleft()
            if wanted is None or wanted(unit):
                head.append(unit)
        batch = _batch(head, self.settings) if head else []
        todo.extendleft(reversed(head[len(batch):]))  # the rest wait for the next batch
        return batch

    def _started(self, ref: Any) -> None:
        """An actor's ready() answered: its models are loaded (it takes batches), or they cannot be."""
        actor = self.starting.pop(ref)
        try:
            failed = self.ray.get(ref)
        except self.ray.exceptions.RayActorError:
            self._lose(actor)
            return
        if failed:
            self.close()
            raise UserError(failed)
        self.actors[actor] = 0

    def _lose(self, actor: Any) -> None:
        """An actor died (its node lost, its process killed): another is asked for in its place,
        which starts wherever the cluster has room (or waits for a node)."""
        if actor not in self.actors and actor not in self.starting.values():
            return  # already replaced (its other batch in flight failed first)
        self.actors.pop(actor, None)
        self.starting = {r: a for r, a in self.starting.items() if a is not actor}
        self.lost += 1
        if self.lost > RETRIES * max(1, self.shape.most):
            self.close()
            raise UserError(f"{self.lost} Ray workers were lost in this stage (nodes lost, or workers killed, e.g. "
                            "out of memory); what was done is kept: check `ray status`, then rerun")
        say(f"ray: a worker was lost ({self.lost} so far); its units go to the others")
        self._start()

    def _check_left(self, left: int) -> None:
        """No actor ready: fail in one line when no live node could ever hold one (else wait: a node
        may be starting, or an autoscaler adding one)."""
        need = {"CPU": self.shape.cpus, "GPU": self.shape.gpus}
        for node in self.ray.nodes():
            have = node.get("Resources", {})
            if node.get("Alive") and all(have.get(k, 0) >= v for k, v in need.items() if v):
                return
        self.close()
        what = f"{self.shape.cpus:g} CPU" + (f", {self.shape.gpus:g} GPU" if self.shape.gpus else "")
        raise UserError(f"no Ray node left that can hold a {self.kind} worker ({what} each); {left} unit(s) not "
                        "done, what was done is kept: add nodes to the cluster (`ray start --address HEAD:6379`), "
                        "then rerun")


def read_inputs(root: Path, batch: list[Unit]) -> dict[str, bytes]:
    """A batch's input pictures, as their files' bytes (the actors never open the run folder)."""
    out: dict[str, bytes] = {}
    for unit in batch:
        style = unit.params.get("style_image")  # --style-image: an absolute path, outside the run folder
        for name in (*unit.inputs, *([style] if style else [])):
            if name not in out:
                try:
                    out[name] = (root / name).read_bytes()
                except OSError as e:
                    raise UserError(f"cannot read {root / name} ({e.strerror or e}), an input of {unit.name}; "
                                    "restore it (or rerun the stage that makes it), then rerun") from None
    return out


@register("ray")
class RayBackend(Backend):
    # What the actors run units with (LocalBackend when None); a test sets a fake painter here.
    inner: type[Backend] | None = None

    def __init__(self, models=None) -> None:
        super().__init__(models)
        import_ray()  # a missing extra fails before anything is planned or written
        # One pool per (kind, settings) for this backend's life (a command's stage, a telephone chain):
        # its actors load their models once; they stop when the backend is dropped.
        self.pools: dict[str, Pool] = {}
        _BACKENDS.add(self)

    def close(self) -> None:
        """Stop this backend's pools (their actors and models)."""
        import contextlib

        pools, self.pools = getattr(self, "pools", {}), {}
        for pool in pools.values():
            with contextlib.suppress(Exception):  # Ray may be shut down already: the actors went with it
                pool.close()

    def __del__(self) -> None:
        self.close()

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

    def pool(self, ray: Any, kind: str, settings: Settings, units: int) -> Pool:
        """This kind's pool: the one already up when the settings its actors load are the same."""
        job = ray.get_runtime_context().get_job_id()
        key = json.dumps([job, kind, settings.to_dict()], sort_keys=True, default=str)
        pool = self.pools.get(key)
        if pool is None or not pool.size():
            for old in [k for k in self.pools if json.loads(k)[:2] == [job, kind]]:
                self.pools.pop(old).close()  # other settings: its models are not these
            shape = pool_shape(ray, settings, kind, units)
            free = ray.available_resources()
            if any(free.get(r, 0) < v for r, v in (("CPU", shape.cpus), ("GPU", shape.gpus)) if v):
                # The other kinds' pools hold what this one needs (a telephone chain on one GPU or on
                # CPUs: a captioner and a painter cannot both stay). A pool up with the same settings
                # serves this kind too: its actors load this kind's models beside their own, once.
                same = [p for k, p in self.pools.items() if json.loads(k)[::2] == [job, settings.to_dict()]
                        and p.size()]
                if same:
                    self.pools[key] = same[0]
                    return same[0]
                for old in list(self.pools):
                    self.pools.pop(old).close()
            pool = self.pools[key] = Pool(ray, kind, settings, shape, self.inner)
        return pool

    def execute(self, root: Path, units: list[Unit], settings: Settings,
                wanted: Callable[[Unit], bool] | None = None) -> Iterator[list[Done]]:
        if not units:
            return
        ray = connect(settings)
        root = Path(root).resolve()
        if settings.ray.shared_folder:
            check_shared_folder(ray, root)
        kind = units[0].kind
        pool = self.pool(ray, kind, settings, len(units))
        shape = pool.shape
        count = f"{shape.fewest}-{shape.most}" if shape.fewest != shape.most else f"{shape.most}"
        each = f"{shape.gpus:g} GPU" if shape.gpus else f"{shape.cpus:g} CPU"
        say(f"ray: {len(units)} unit(s) on {count} actor(s) ({each} each)")
        yield from pool.run(root, units, wanted)
        if pool.done_by:
            say("ray: " + ", ".join(f"{w} ran {n}" for w, n in sorted(pool.done_by.items())))
        pool.done_by.clear()


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
