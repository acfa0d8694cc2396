"""A local stand-in for the part of Replicate's HTTP API the `replicate` client uses: look up a model
version, create a prediction (by version, or by an official model's name), get one, list the account's
(newest first, paginated), cancel one, and the output files by URL. Bearer tokens are checked. The frame
interpolation model answers as FILM does on Replicate: times_to_interpolate 1 gives one PNG (the
midpoint), n > 1 an mp4 of 2^n + 1 frames (the two inputs included), here blends of the two pictures
made with ffmpeg. It counts predictions per input, so that a test can tell that no frame was predicted
twice; knobs make it hold predictions, fail them, throttle, add latency to creates, answer a create it
made with a 502 (or an HTML page), answer polls with HTML, or serve other bytes as an output.

Point the real client at it with REPLICATE_BASE_URL=server.url (and REPLICATE_API_TOKEN=server.token).
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from video2dream.backends.replicate import ReplicateSettings

CAPTION_REF = ReplicateSettings().caption_model
PAINT_REF = ReplicateSettings().paint_model
MORPH_REF = ReplicateSettings().morph_model
FILE_KEYS = ("image", "frame1", "frame2")
IDS = itertools.count(1)  # prediction ids, never reused in this process
HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    kind: str  # "caption", "paint" or "morph"
    input: dict[str, Any]
    status: str = "starting"
    output: Any = None
    error: str | None = None
    polls: int = 0
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()))

    def json(self, base: str, files: str = "") -> dict[str, Any]:
        """files: "" leaves the pictures out of the input (a poll), "url" gives them as URLs of this server
        (the listing, as a service that keeps uploads as files), "data" as sent."""
        def shown(k: str, v: Any) -> Any:
            return f"{base}/inputs/{self.id}/{k}" if files == "url" and k in FILE_KEYS else v

        return {"id": self.id, "model": self.model, "version": self.version, "status": self.status,
                "input": {k: shown(k, v) for k, v in self.input.items() if files or k not in FILE_KEYS},
                "output": self.output,
                "error": self.error, "logs": "", "metrics": {}, "created_at": self.created_at,
                "started_at": None, "completed_at": None,
                "urls": {"get": f"{base}/v1/predictions/{self.id}",
                         "cancel": f"{base}/v1/predictions/{self.id}/cancel"}}


@dataclass
class FakeReplicate:
    """The server's state and knobs (change them between requests; they are read under the lock)."""
    token: str = "r8_fake_token"
    versions: dict[str, tuple[str, str]] = field(default_factory=lambda: {  # version -> (owner/name, kind)
        CAPTION_REF.split(":")[1]: (CAPTION_REF.split(":")[0], "caption"),
        PAINT_REF.split(":")[1]: (PAINT_REF.split(":")[0], "paint"),
        MORPH_REF.split(":")[1]: (MORPH_REF.split(":")[0], "morph")})
    hold: bool = False  # predictions stay "processing" until this is False again
    hold_only: Callable[[Prediction], bool] | None = None  # hold just these
    fail: Callable[[Prediction], str | None] = lambda p: None  # an error text fails the prediction
    throttle: int = 0  # the next N requests are answered 429 or 503 (Retry-After: 0)
    latency: float = 0.0  # seconds a create takes on the network: half before the prediction is made, half after
    answer_delay: float = 0.0  # more seconds after it is made, before the answer leaves
    bad_gateway: int = 0  # the next N creates make their prediction, then answer 502 (a gateway's HTML page)
    garbled_creates: int = 0  # the next N creates make their prediction, then answer 201 with an HTML page
    garbled_polls: int = 0  # the next N polls of a prediction are answered 200 with an HTML page
    files: Callable[[Prediction], bytes | None] | None = None  # other bytes served as a prediction's output
    page_size: int = 100  # predictions per page of the listing
    list_files: str = "url"  # how the listing shows the pictures sent: "url" or "data"
    predictions: dict[str, Prediction] = field(default_factory=dict)
    created: Counter = field(default_factory=Counter)  # input's fingerprint -> predictions created
    cancels: list[str] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)  # the paths predictions were created at
    throttled: int = 0
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: IDS)  # unique across resets, as the service's are
    _files: dict[str, bytes] = field(default_factory=dict, repr=False)  # prediction id -> its made output file

    def created_for(self, kind: str) -> Counter:
        return Counter({k: n for k, n in self.created.items() if k[0] == kind})

    # -- the API's behaviour -------------------------------------------------------------------

    def create(self, version: str, model: str, inputs: dict[str, Any]) -> tuple[int, dict]:
        if version not in self.versions:
            return 422, {"title": "Invalid version", "detail": "The specified version does not exist (or perhaps "
                         "you don't have permission to use it?)", "status": 422}
        name, kind = self.versions[version]
        self.posts.append(f"/v1/models/{model}/predictions" if model else "/v1/predictions")
        p = Prediction(f"p{next(self._ids):05d}", name, version, kind, inputs)
        self.predictions[p.id] = p
        self.created[fingerprint(kind, inputs)] += 1
        return 201, p.json(self.url)

    def advance(self, p: Prediction) -> None:
        """One poll: starting -> processing -> done (unless held)."""
        p.polls += 1
        if p.status not in ("starting", "processing"):
            return
        if p.status == "starting" or self.hold or (self.hold_only and self.hold_only(p)):
            p.status = "processing"
            return
        error = self.fail(p)
        if error:
            p.status, p.error = "failed", error
        elif p.kind == "paint":
            p.status, p.output = "succeeded", [f"{self.url}/files/{p.id}.png"]
        elif p.kind == "morph":  # FILM's output is one file (not a list)
            ext = "png" if int(p.input.get("times_to_interpolate", 1)) == 1 else "mp4"
            p.status, p.output = "succeeded", f"{self.url}/files/{p.id}.{ext}"
        else:
            p.status, p.output = "succeeded", f"a picture of {fingerprint('caption', p.input)[1][:8]}, " \
                                              "trending on artstation, sharp focus"

    def listing(self, cursor: int) -> dict[str, Any]:
        """One page of the account's predictions, newest first; cursor: how many newer ones to skip."""
        newest = sorted(self.predictions.values(), key=lambda p: int(p.id[1:]), reverse=True)
        page = newest[cursor:cursor + self.page_size]
        more = cursor + self.page_size < len(newest)
        return {"previous": None, "next": f"{self.url}/v1/predictions?cursor={cursor + self.page_size}" if more
                else None, "results": [p.json(self.url, self.list_files) for p in page]}

    def picture(self, prediction_id: str) -> bytes | None:
        from PIL import Image

        p = self.predictions.get(prediction_id)
        if p is not None and self.files is not None:
            data = self.files(p)
            if data is not None:
                return data
        if p is not None and p.kind == "morph":
            if prediction_id not in self._files:
                self._files[prediction_id] = interpolate(p.input)
            return self._files[prediction_id]
        if p is None or p.kind != "paint":
            return None
        color = tuple(hashlib.sha256(json.dumps(p.input, sort_keys=True).encode()).digest()[:3])
        size = (int(p.input.get("width", 64)), int(p.input.get("height", 64)))
        if "image" in p.input:  # as SDXL on Replicate: img2img paints at the init image's size
            with Image.open(io.BytesIO(image_bytes(p.input["image"]))) as init:
                size = init.size
        image = Image.new("RGB", size, color)
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()


def interpolate(inputs: dict[str, Any]) -> bytes:
    """FILM's output for frame1, frame2 and times_to_interpolate n: a PNG of their midpoint (n = 1),
    else an mp4 (30 fps) of 2^n + 1 frames, frame j the blend j/2^n of the two pictures."""
    import subprocess
    import tempfile
    from pathlib import Path

    from PIL import Image

    from video2dream.media import ffmpeg_path

    with Image.open(io.BytesIO(image_bytes(inputs["frame1"]))) as a, \
            Image.open(io.BytesIO(image_bytes(inputs["frame2"]))) as b:
        a, b = a.convert("RGB"), b.convert("RGB").resize(a.size)
    n = int(inputs.get("times_to_interpolate", 1))
    if n == 1:
        out = io.BytesIO()
        Image.blend(a, b, 0.5).save(out, format="PNG")
        return out.getvalue()
    steps = 2 ** n
    with tempfile.TemporaryDirectory(prefix="fake-film-") as tmp:
        for j in range(steps + 1):
            Image.blend(a, b, j / steps).save(Path(tmp) / f"{j:05d}.png")
        video = Path(tmp) / "out.mp4"
        subprocess.run([ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y", "-framerate", "30", "-i",
                        str(Path(tmp) / "%05d.png"), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "1",
                        str(video)], check=True)
        return video.read_bytes()


def fingerprint(kind: str, inputs: dict[str, Any]) -> tuple[str, str]:
    """What makes two predictions the same work: a paint's prompt and seed (and init image), a
    caption's image, a morph's two pictures and times."""
    if kind == "morph":
        pictures = hashlib.sha256(f"{inputs.get('frame1')}|{inputs.get('frame2')}".encode()).hexdigest()[:16]
        return kind, f"{pictures}|{inputs.get('times_to_interpolate')}"
    if kind == "caption":
        return kind, hashlib.sha256(str(inputs.get("image", "")).encode()).hexdigest()
    image = hashlib.sha256(str(inputs.get("image", "")).encode()).hexdigest()[:8] if "image" in inputs else ""
    return kind, f"{inputs.get('prompt')}|{inputs.get('seed')}|{image}"


def image_bytes(data_url: str) -> bytes:
    return base64.b64decode(data_url.partition(",")[2])


class Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed while the answer was on its way

    def _gate(self, authorized: bool = True) -> bool:
        """Throttle and authorization; False when the request was answered here."""
        fake: FakeReplicate = self.server.fake
        with fake.lock:
            if fake.throttle > 0:  # 429s, and every third a 503 (a busy service says either)
                fake.throttle -= 1
                fake.throttled += 1
                status = 503 if fake.throttled % 3 == 0 else 429
                self._send(status, {"title": "Too Many Requests", "detail": "throttled", "status": status},
                           headers={"Retry-After": "0"})
                return False
        if authorized and self.headers.get("Authorization") != f"Bearer {fake.token}":
            self._send(401, {"title": "Unauthenticated", "detail": "Invalid token.", "status": 401})
            return False
        return True

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        fake: FakeReplicate = self.server.fake
        m = re.fullmatch(r"/files/(\w+)\.(png|mp4)", self.path)
        if m:  # outputs are served without a token, as replicate.delivery does
            with fake.lock:
                data = fake.picture(m[1])
            kind = "image/png" if m[2] == "png" else "video/mp4"
            self._send(200, data, kind) if data else self._send(404, {"detail": "no such file"})
            return
        m = re.fullmatch(r"/inputs/(\w+)/(\w+)", self.path)
        if m:  # a picture sent with a prediction, as the listing names it
            with fake.lock:
                p = fake.predictions.get(m[1])
                value = p.input.get(m[2]) if p else None
            self._send(200, image_bytes(value), "image/png") if value else self._send(404, {"detail": "no such file"})
            return
        if not self._gate():
            return
        with fake.lock:
            m = re.fullmatch(r"/v1/predictions(?:\?cursor=(\d+))?", self.path)
            if m:
                self._send(200, fake.listing(int(m[1] or 0)))
                return
            m = re.fullmatch(r"/v1/predictions/(\w+)", self.path)
            if m:
                p = fake.predictions.get(m[1])
                if p is None:
                    self._send(404, {"detail": "Not found.", "status": 404})
                    return
                if fake.garbled_polls > 0:
                    fake.garbled_polls -= 1
                    self._send(200, HTML, "text/html")
                    return
                fake.advance(p)
                self._send(200, p.json(fake.url))
                return
            m = re.fullmatch(r"/v1/models/([\w.-]+)/([\w.-]+)/versions/(\w+)", self.path)
            if m and fake.versions.get(m[3], ("",))[0] == f"{m[1]}/{m[2]}":
                self._send(200, {"id": m[3], "created_at": "2023-07-26T00:00:00Z", "cog_version": "0.8.1",
                                 "openapi_schema": {}})
                return
            m = re.fullmatch(r"/v1/models/([\w.-]+)/([\w.-]+)", self.path)
            if m and any(name == f"{m[1]}/{m[2]}" for name, _ in fake.versions.values()):
                self._send(200, {"url": f"https://replicate.com/{m[1]}/{m[2]}", "owner": m[1], "name": m[2],
                                 "description": None, "visibility": "public", "github_url": None,
                                 "paper_url": None, "license_url": None, "run_count": 0, "cover_image_url": None,
                                 "default_example": None, "latest_version": None})
                return
        self._send(404, {"detail": "Not found.", "status": 404})

    def do_POST(self) -> None:  # noqa: N802
        fake: FakeReplicate = self.server.fake
        if not self._gate():
            return
        body = self._body()
        m = re.fullmatch(r"/v1/models/([\w.-]+)/([\w.-]+)/predictions", self.path)
        if self.path == "/v1/predictions" or m:
            time.sleep(fake.latency / 2)  # the request on its way
            with fake.lock:
                if m:
                    version = next((v for v, (name, _) in fake.versions.items() if name == f"{m[1]}/{m[2]}"), "")
                    status, answer = fake.create(version, f"{m[1]}/{m[2]}", body.get("input", {}))
                else:
                    status, answer = fake.create(body.get("version", ""), "", body.get("input", {}))
                bad = status == 201 and fake.bad_gateway > 0
                garbled = status == 201 and not bad and fake.garbled_creates > 0
                fake.bad_gateway -= bad
                fake.garbled_creates -= garbled
            time.sleep(fake.latency / 2 + fake.answer_delay)  # the answer on its way: a kill now loses it
            if bad:
                self._send(502, HTML, "text/html")
            else:
                self._send(201, HTML, "text/html") if garbled else self._send(status, answer)
            return
        with fake.lock:
            m = re.fullmatch(r"/v1/predictions/(\w+)/cancel", self.path)
            if m and m[1] in fake.predictions:
                p = fake.predictions[m[1]]
                fake.cancels.append(p.id)
                if p.status in ("starting", "processing"):
                    p.status = "canceled"
                self._send(200, p.json(fake.url))
                return
        self._send(404, {"detail": "Not found.", "status": 404})


class Server:
    """A running fake on 127.0.0.1 (a free port) in a daemon thread; stop() ends it."""

    def __init__(self, fake: FakeReplicate | None = None) -> None:
        self.fake = fake or FakeReplicate()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self.fake  # type: ignore[attr-defined]
        self.fake.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> FakeReplicate:
        """A fresh state (no predictions, no knobs) at the same address."""
        self.fake = FakeReplicate(url=self.fake.url)
        self.httpd.fake = self.fake  # type: ignore[attr-defined]
        return self.fake

    @property
    def url(self) -> str:
        return self.fake.url

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
