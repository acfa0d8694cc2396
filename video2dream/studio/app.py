"""The review page's web app (Starlette): a JSON API, server-sent events and static files.

Writes (a row edit, a job) take the folder's lock as the CLI does; a job runs on one worker thread,
one at a time. Requests are refused before anything is touched when a value is wrong (400), the
folder is held by a command (423), another job runs (409) or a row changed since it was read (409).
A pick of a candidate is a write too (the library's pick, under the lock).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import SettingError, UserError
from ..runfolder import RunFolder
from ..tables import FRAME_NAME
from . import files, library

STATIC = Path(__file__).parent / "static"
COOKIE = "video2dream_token"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]


def error(message: str, status: int = 400, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class Jobs:
    """The one job slot of this folder, and the event log the SSE stream replays."""

    def __init__(self, run: RunFolder) -> None:
        self.run = run
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.current: dict[str, Any] | None = None
        self.cancel = threading.Event()
        self.thread: threading.Thread | None = None
        self.stopping: Callable[[], bool] = lambda: False  # the server is shutting down: end event streams

    def emit(self, event: dict[str, Any]) -> None:
        with self.lock:
            event = {**event, "seq": len(self.events), "at": time.time()}
            self.events.append(event)

    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, kind: str, settings: Any, names: list[str] | None, count: int | None = None) -> dict[str, Any]:
        self.cancel = threading.Event()
        reporter = library.PageReporter(self.emit, self.cancel)
        self.current = {"kind": kind, "names": names, "state": "running", "started": time.time()}
        self.emit({"type": "start", "kind": kind, "names": names})
        self.thread = threading.Thread(target=self._work, args=(kind, settings, names, reporter, count), daemon=True)
        self.thread.start()
        return self.current

    def _work(self, kind: str, settings: Any, names: list[str] | None, reporter: library.PageReporter,
              count: int | None) -> None:
        state, message = "done", ""
        try:
            library.run_job(kind, self.run, settings, names, reporter, count)
        except library.Canceled:
            state, message = "canceled", "canceled; finished work is kept"
        except UserError as e:
            state, message = "failed", e.render(None) if isinstance(e, SettingError) else str(e)
        except Exception as e:  # noqa: BLE001 - the page shows it; the server goes on
            state, message = "failed", f"unexpected error: {e.__class__.__name__}: {e}"
        assert self.current is not None
        self.current.update(state=state, message=message, ended=time.time())
        self.emit({"type": "end", "kind": kind, "state": state, "message": message})


def create_app(run_dir: str | Path, token: str | None = None, loopback: bool = True) -> Starlette:
    """The app for one run folder. token: required of every request (query ?token=, then a cookie)
    when the server listens beyond this machine. loopback: accept only local Host headers (a web page
    elsewhere cannot reach the server through DNS rebinding)."""
    run = RunFolder(run_dir)
    run.require()
    jobs = Jobs(run)

    def holder() -> dict[str, Any] | None:
        h = library.lock_holder(run)
        return None if h is None or jobs.busy() else h

    def held_error() -> JSONResponse | None:
        h = holder()
        if h is None:
            return None
        who = f" (pid {h.get('pid')} on {h.get('host')}, since {h.get('since')})" if h else ""
        return error(f"{run.root} is in use by a video2dream command{who}; nothing was saved: wait for it "
                     "to finish, then try again", 423)

    async def body(request: Request) -> dict[str, Any] | JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error("send JSON (Content-Type: application/json)", 415)
        try:
            data = json.loads(await request.body())
        except ValueError:
            return error("the request body is not valid JSON")
        return data if isinstance(data, dict) else error("the request body must be a JSON object")

    async def keyframe_write(request: Request, name: str, fields: set[str], sets: str,
                             verb: str) -> dict[str, Any] | JSONResponse:
        """The checks every write to one keyframe makes first: a JSON object of known fields, a keyframe
        name, the folder not held by a command, no job of the page's running; the data, or the refusal."""
        data = await body(request)
        if isinstance(data, JSONResponse):
            return data
        if not FRAME_NAME.fullmatch(name):
            return error(f"{name[:80]!r} is not a keyframe name", 404)
        unknown = set(data) - fields
        if unknown:
            return error(f"unknown field(s) {', '.join(sorted(unknown))}; {sets}")
        if "version" in fields and "version" not in data:
            return error("give the row's version as read (\"version\"), so that no other edit is overwritten")
        if (held := held_error()) is not None:
            return held
        if jobs.busy():
            return error(f"a job is running on this folder; wait for it to finish (or cancel it), then {verb}", 409)
        return data

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def api_run(request: Request) -> Response:
        def gather() -> dict[str, Any]:
            try:
                st: dict[str, Any] = library.status(run)
            except UserError as e:
                st = {"error": str(e)}
            videos = [n for n in ("dream.mp4", "dream_side_by_side.mp4") if _served(run, n)]
            return {"name": run.root.resolve().name, "status": st, "videos": videos,
                    "chain": files.chain(run) is not None, "held_by": holder(),
                    "job": jobs.current, "jobs": list(library.JOBS)}
        return JSONResponse(await asyncio.to_thread(gather))

    async def api_keyframes(request: Request) -> Response:
        try:
            return JSONResponse({"keyframes": await asyncio.to_thread(files.keyframes, run)})
        except UserError as e:
            return error(str(e), 500)

    async def api_keyframe(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            return JSONResponse(await asyncio.to_thread(files.keyframe, run, name))
        except files.NotServed as e:
            return error(str(e), 404)
        except UserError as e:
            return error(str(e), 500)

    async def api_edit(request: Request) -> Response:
        name = request.path_params["name"]
        data = await keyframe_write(request, name, {"prompt", "negative_prompt", "version"},
                                    "a row edit sets prompt and negative_prompt", "save")
        if isinstance(data, JSONResponse):
            return data
        try:
            version = await asyncio.to_thread(library.edit_row, run, name, data.get("prompt"),
                                              data.get("negative_prompt"), data["version"])
        except library.RowChanged as e:
            return error(str(e), 409, changed=True)
        except library.Busy as e:
            return error(str(e), 409)
        except UserError as e:
            return error(str(e), 423 if "in use by" in str(e) else 400)
        return JSONResponse({"name": name, "version": version})

    async def api_pick(request: Request) -> Response:
        """Make a candidate of `generate --variants` the keyframe's dream (the library's pick)."""
        name = request.path_params["name"]
        data = await keyframe_write(request, name, {"number"}, "a pick sets number", "pick")
        if isinstance(data, JSONResponse):
            return data
        try:
            await asyncio.to_thread(library.pick, run, name, data.get("number"), library.PageReporter(jobs.emit))
        except library.Busy as e:
            return error(str(e), 409)
        except UserError as e:
            return error(str(e), 423 if "in use by" in str(e) else 400)
        return JSONResponse(await asyncio.to_thread(files.keyframe, run, name))

    async def api_file(request: Request) -> Response:
        try:
            path = files.own_file(run, request.path_params["path"])
        except files.NotServed as e:
            return error(str(e), 404)
        return FileResponse(path)

    async def api_thumb(request: Request) -> Response:
        try:
            path = await asyncio.to_thread(files.thumbnail, run, request.path_params["path"])
        except files.NotServed as e:
            return error(str(e), 404)
        except (OSError, ValueError) as e:
            return error(f"cannot read {request.path_params['path']}: {e.__class__.__name__}", 404)
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def api_waveform(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(files.waveform, run))

    async def api_chain(request: Request) -> Response:
        return JSONResponse({"chain": await asyncio.to_thread(files.chain, run)})

    async def api_start(request: Request) -> Response:
        data = await body(request)
        if isinstance(data, JSONResponse):
            return data
        kind = data.get("kind")
        if kind not in library.JOBS:
            return error(f"unknown job {str(kind)[:40]!r}; the page runs {', '.join(library.JOBS)}")
        unknown = set(data) - {"kind", "names", "settings", "replace_edits", "count"}
        if unknown:
            return error(f"unknown field(s) {', '.join(sorted(unknown))}")
        count = data.get("count")
        if kind == "variants":
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= library.MAX_PAGE_VARIANTS:
                return error(f"count must be a number of candidates from 1 to {library.MAX_PAGE_VARIANTS}")
            if data.get("names") is None:
                return error("variants takes the names of the keyframes to paint candidates of")
        elif count is not None:
            return error(f"{kind} takes no count")
        names = data.get("names")
        if names is not None:
            if kind not in ("repaint", "recaption", "variants"):
                return error(f"{kind} runs on the whole folder; it takes no names")
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                return error("names must be a non-empty list of keyframe names")
            known = {k["name"] for k in await asyncio.to_thread(files.keyframes, run)}
            bad = [n for n in names if n not in known]
            if bad:
                return error(f"{bad[0][:80]!r} is not a keyframe of this run")
        if (held := held_error()) is not None:
            return held
        if jobs.busy():
            return error(f"a {jobs.current['kind']} job is running; wait for it, or cancel it", 409)
        try:
            settings = await asyncio.to_thread(library.settings_for, run, data.get("settings"))
        except SettingError as e:
            return error(e.render(None))
        except UserError as e:
            return error(str(e))
        if kind == "recaption" and not data.get("replace_edits"):
            edited = await asyncio.to_thread(library.edited_rows, run, names or [])
            if edited:
                return error(f"{len(edited)} of these rows were edited by hand ({', '.join(edited[:5])}); "
                             "re-captioning replaces your words", 409, confirm=edited)
        return JSONResponse(jobs.start(kind, settings, names, count), status_code=202)

    async def api_cancel(request: Request) -> Response:
        data = await body(request)
        if isinstance(data, JSONResponse):
            return data
        if not jobs.busy():
            return error("no job is running", 409)
        jobs.cancel.set()
        jobs.emit({"type": "line", "text": "canceling: the unit in flight finishes first"})
        return JSONResponse({"canceling": True})

    async def api_job(request: Request) -> Response:
        return JSONResponse({"job": jobs.current, "busy": jobs.busy()})

    async def api_events(request: Request) -> Response:
        """Server-sent events: the job's events from ?since=N on, and the folder's lock as it changes.
        ?until_idle=1 ends the stream once no job runs (for scripts and tests)."""
        try:
            seq = int(request.query_params.get("since", "0"))
        except ValueError:
            return error("since must be a number")
        until_idle = request.query_params.get("until_idle") == "1"

        async def stream():
            nonlocal seq
            last_held: Any = "?"
            beat = 0.0
            while True:
                new = jobs.events[seq:]
                for event in new:
                    yield f"id: {event['seq']}\ndata: {json.dumps(event)}\n\n"
                seq += len(new)
                now = time.monotonic()
                if now - beat > 1.0:
                    beat = now
                    held = await asyncio.to_thread(holder)
                    if held != last_held:
                        last_held = held
                        yield f"data: {json.dumps({'type': 'lock', 'held_by': held})}\n\n"
                if until_idle and not jobs.busy() and seq >= len(jobs.events):
                    return
                if jobs.stopping() or await request.is_disconnected():
                    return
                await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", index),
        Route("/api/run", api_run),
        Route("/api/keyframes", api_keyframes),
        Route("/api/keyframes/{name}", api_keyframe, methods=["GET"]),
        Route("/api/keyframes/{name}", api_edit, methods=["PUT"]),
        Route("/api/keyframes/{name}/pick", api_pick, methods=["POST"]),
        Route("/api/files/{path:path}", api_file),
        Route("/api/thumbs/{path:path}", api_thumb),
        Route("/api/waveform", api_waveform),
        Route("/api/chain", api_chain),
        Route("/api/jobs", api_start, methods=["POST"]),
        Route("/api/jobs/cancel", api_cancel, methods=["POST"]),
        Route("/api/job", api_job),
        Route("/api/events", api_events),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)] if loopback else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.jobs = jobs
    return TokenGate(app, token) if token else app


def _served(run: RunFolder, name: str) -> bool:
    try:
        files.own_file(run, name)
    except files.NotServed:
        return False
    return True


class TokenGate:
    """Every request carries the token: ?token=T (then a cookie, so the page's own requests need no
    query), or the cookie. Anything else is refused before the app sees it."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        cookie = request.cookies.get(COOKIE)
        if given is not None and secrets.compare_digest(given.encode(), self.token.encode()):
            async def send_with_cookie(message: dict) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    headers.append((b"set-cookie",
                                    f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()))
                    message = {**message, "headers": headers}
                await send(message)
            await self.app(scope, receive, send_with_cookie)
            return
        if cookie is not None and secrets.compare_digest(cookie.encode(), self.token.encode()):
            await self.app(scope, receive, send)
            return
        await PlainTextResponse("video2dream studio: open the address with its ?token=... as printed when the "
                                "server started", status_code=403)(scope, receive, send)
