"""Where models come from: Hugging Face ids or local folders, and the built-in tiny test models.

Ids starting with "tiny:" name tiny randomly initialised models of the real architectures. They are
built on first use into the cache folder, saved like the hub's, and then loaded through the same
`from_pretrained` / open_clip code as any real model.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import UserError, debug_enabled, short

# name -> (module, builder); a builder takes an empty folder and fills it.
TINY_MODELS: dict[str, tuple[str, str]] = {
    "tiny:sdxl": ("video2dream.models.tiny_sdxl", "build_tiny_sdxl"),
    "tiny:taesdxl": ("video2dream.models.tiny_sdxl", "build_tiny_taesdxl"),  # for --preview-vae
    "tiny:sdxl-refiner": ("video2dream.models.tiny_sdxl", "build_tiny_refiner"),  # for --refiner
    "tiny:controlnet-sdxl": ("video2dream.models.tiny_sdxl", "build_tiny_controlnet"),  # for --controlnet
    "tiny:dpt": ("video2dream.models.tiny_sdxl", "build_tiny_dpt"),  # for --controlnet depth
    "tiny:ip-adapter": ("video2dream.models.ip_adapter", "build_tiny_ip_adapter"),  # for --style-image
    "tiny:blip": ("video2dream.models.tiny", "build_tiny_blip"),
    "tiny:clip": ("video2dream.models.tiny", "build_tiny_clip"),
}
TINY_VERSION = "v1"  # bump when a builder changes, so old caches are not reused


def cache_dir() -> Path:
    """$VIDEO2DREAM_CACHE, else $XDG_CACHE_HOME/video2dream, else ~/.cache/video2dream."""
    explicit = os.environ.get("VIDEO2DREAM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "video2dream"


def is_tiny(name: str) -> bool:
    return name.startswith("tiny:")


def tiny_model_dir(name: str) -> Path:
    """The folder of a tiny model, built on first use (atomically: built aside, then renamed)."""
    if name not in TINY_MODELS:
        known = ", ".join(TINY_MODELS)
        raise UserError(f"unknown tiny model {short(name, 200)} (known: {known})")
    dest = cache_dir() / "tiny" / f"{name.split(':', 1)[1]}-{TINY_VERSION}"
    if dest.is_dir():
        return dest
    module, func = TINY_MODELS[name]
    from ..progress import say

    # Said once: the folder stays, and the next command finds it built.
    say(f"building the tiny model {name} (first use, up to a minute) in {dest}")
    builder: Callable[[Path], None] = getattr(importlib.import_module(module), func)
    work = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        builder(work)
        try:
            os.replace(work, dest)
        except OSError:
            if not dest.is_dir():  # another process may have won the race; that is fine
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def resolve(name: str) -> str:
    """A tiny model's local folder, or the id / path as given (for from_pretrained)."""
    if is_tiny(name):
        return str(tiny_model_dir(name))
    return name


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _where(name: str) -> str:
    path = Path(name).expanduser()
    try:
        return "a local file" if path.is_file() else "a local folder" if path.exists() else "a Hugging Face model id"
    except (OSError, ValueError):  # too long for a path (ENAMETOOLONG)
        return "neither an existing path nor a model id"


def _detail(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # torch's messages carry terminal colours
    return text.splitlines()[0][:200] if text else e.__class__.__name__


@contextlib.contextmanager
def loading(kind: str, name: str) -> Iterator[None]:
    """Turn the many ways a load can fail (no such repo, offline, no cache) into one clear line."""
    check_hub_reachable(kind, name)
    try:
        yield
    except UserError:
        raise
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) met more than tensors
        if debug_enabled():
            raise
        raise UserError(f"cannot load {kind} {short(name, 200)} ({_where(name)}): its weights are a pickle that holds "
                        "more than tensors, refused because loading it could run code; use its .safetensors "
                        f"weights [{_detail(e)}]") from e
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        if debug_enabled():
            raise
        hint = ("it is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading"
                if offline() else "check the name, your network, or the HF cache (HF_HOME)")
        raise UserError(f"cannot load {kind} {short(name, 200)} ({_where(name)}): {hint} [{_detail(e)}]") from e


# -- is the hub reachable? -------------------------------------------------------------------------
# Without a network (and without HF_HUB_OFFLINE=1) a download retries for minutes before it fails.
# One short connection to the hub's host, made only when a model must come from the hub, says so at once.

PROBE_TIMEOUT = 2.0  # seconds for the connection (and as much again for the name lookup)
_probed: dict[tuple[str, int], str | None] = {}  # (host, port) -> why unreachable, None if reachable


def hub_repo(kind: str, name: str) -> str | None:
    """The Hugging Face repo a model would be downloaded from; None for tiny models, local paths and
    anything else that does not come from the hub."""
    if is_tiny(name) or Path(name).expanduser().exists():
        return None
    if kind == "CLIP model":  # open_clip's NAME/PRETRAINED: its table names the repo
        import open_clip

        arch, _, tag = name.partition("/")
        with contextlib.suppress(Exception):
            hf_hub = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "")  # "org/repo/" or "org/repo/file"
            return "/".join(hf_hub.strip("/").split("/")[:2]) or None
        return None
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except ValueError:
        return None  # not an id: the load itself will say what is wrong
    return name


def in_hub_cache(repo: str) -> bool:
    """Whether a snapshot of repo is in the Hugging Face cache (then huggingface_hub uses it offline)."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def hub_endpoint() -> tuple[str, int]:
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def _behind_proxy() -> bool:
    names = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    return any(os.environ.get(n) for n in names)


def unreachable(host: str, port: int) -> str | None:
    """Why host:port takes no connection (None if it does); asked once per process."""
    if (host, port) not in _probed:
        answer: list[str | None] = []

        def attempt() -> None:
            try:
                socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
                answer.append(None)
            except OSError as e:
                answer.append(e.strerror or str(e) or e.__class__.__name__)

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(2 * PROBE_TIMEOUT)  # bounds the name lookup too
        _probed[(host, port)] = answer[0] if answer else "no answer"
    return _probed[(host, port)]


def check_hub_reachable(kind: str, name: str) -> None:
    """A model to download while the hub cannot be reached: one line saying what to do, at once."""
    repo = hub_repo(kind, name)
    if repo is None or offline() or _behind_proxy() or in_hub_cache(repo):
        return
    host, port = hub_endpoint()
    why = unreachable(host, port)
    if why is not None:
        raise UserError(
            f"cannot reach the Hugging Face hub ({host}:{port}: {why}) to download {kind} {short(name, 200)}, which "
            "is not in the HF cache: download it once on a machine with a network (then copy its HF cache, HF_HOME, "
            "here), or give a local folder; if the models are cached under another HF_HOME, set that HF_HOME "
            "and HF_HUB_OFFLINE=1")
