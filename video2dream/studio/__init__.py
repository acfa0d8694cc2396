"""`video2dream studio RUN`: the review page of a run folder (the optional extra `studio`)."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from pathlib import Path

from ..errors import UserError

INSTALL = "the review page needs the studio extra: pip install 'video2dream[studio]'"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host.strip("[]"), 0))
        return s.getsockname()[1]


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int | None = None, open_browser: bool = False) -> None:
    """Serve the page until Ctrl-C; print its address (with a token beyond loopback)."""
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError(INSTALL) from None
    from ..progress import say
    from .app import create_app

    loopback = is_loopback(host)
    token = None if loopback else secrets.token_urlsafe(24)
    app = create_app(run_dir, token=token, loopback=loopback)
    try:
        port = port or free_port(host)
    except OSError as e:
        raise UserError(f"cannot listen on {host}: {e.strerror}; give another --host") from None
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"video2dream studio: {url}", flush=True)
    say("Ctrl-C stops the server (a job in progress finishes its unit first)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(app, host=host.strip("[]"), port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)  # an open page's event stream must not hold Ctrl-C
    server = uvicorn.Server(config)
    jobs = app.app.state.jobs if token else app.state.jobs
    jobs.stopping = lambda: server.should_exit
    try:
        server.run()
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}; give another --port") from None
    if jobs.busy():  # Ctrl-C: as the CLI, the unit in flight is finished
        jobs.cancel.set()
        jobs.thread.join()
