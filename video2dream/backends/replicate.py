"""The replicate backend: each unit is one prediction on Replicate's API (replicate.com), through the
official `replicate` client (pip install 'video2dream[replicate]'), for users without a GPU.

Captions come from replicate.caption_model (a CLIP Interrogator: image -> text), dreams from
replicate.paint_model (SDXL: prompt, ... -> a list of image URLs), in-betweens from
replicate.morph_model (FILM: the two dreams -> the gap's in-betweens, one prediction per gap; see
Gap). A remote result is not a local one: key_part puts the backend's name and the model version
into every unit's key.

Never pay twice: a prediction's id is appended (and fsynced) to .video2dream/predictions.jsonl
before the command waits on it; a later command that needs the same unit (same frame, same key)
collects that prediction by id instead of creating a new one. Ctrl-C (or a kill) leaves the
predictions in flight running and journaled: the next command collects them (a cancel would be
paid all the same, and lose the picture). A prediction slower than replicate.timeout is canceled.
A content-filter refusal marks its frame in refused.csv and the others go on.

The client itself reads REPLICATE_API_TOKEN and REPLICATE_BASE_URL (tests and proxies).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SettingError, UserError
from ..progress import say
from ..units import Unit
from .base import Backend, Caption, Done, Painted, register

if TYPE_CHECKING:
    from ..settings import Settings

JOURNAL = "predictions.jsonl"  # in the run folder's .video2dream/
REFUSED = "refused.csv"  # in the run folder: the frames the service's content filter refused
WORKERS = 4  # predictions in flight when --workers is not given
RETRY_STATUS = {429, 500, 502, 503, 504}
TRIES = 8  # per request, on 429, 5xx and network errors
MAX_WAIT = 60.0  # seconds between two tries, at most (a longer Retry-After is cut to this)
# How Replicate's models say their safety checker refused (SDXL: "NSFW content detected ...").
REFUSAL = re.compile(r"nsfw|safety checker|content (filter|policy)|flagged as sensitive", re.IGNORECASE)
CLIP_NAMES = ("ViT-L-14/openai", "ViT-H-14/laion2b_s32b_b79k", "ViT-bigG-14/laion2b_s39b_b160k")
TOKEN_PAGE = "https://replicate.com/account/api-tokens"
MAX_TIMES = 8  # FILM's largest times_to_interpolate: 2^8 - 1 = 255 in-betweens per gap
MODEL_SETTING = {"caption": "replicate.caption_model", "paint": "replicate.paint_model",
                 "morph": "replicate.morph_model"}


class Refused(Exception):
    """The service's content filter refused a unit: its frame is marked, the others go on."""


class Gone(Exception):
    """A collected prediction's output is no longer kept by the service (after about an hour)."""


class Stopped(Exception):
    """The command is stopping (Ctrl-C, an error elsewhere): stop waiting; the prediction stays journaled."""


def model_ref(kind: str, settings: Settings) -> str:
    r = settings.replicate
    return {"caption": r.caption_model, "paint": r.paint_model, "morph": r.morph_model}[kind]


@dataclass
class Gap:
    """What one prediction makes: one caption or paint unit, or every in-between of a gap (FILM makes a
    gap's in-betweens in one call: 2^n - 1 evenly spaced pictures for times_to_interpolate n, the
    smallest n that gives at least as many as the gap has, at most MAX_TIMES). It is journaled by its
    name (a gap's: 000001-000002) and its key (a gap's: the model, the two dreams' keys and n)."""
    name: str
    kind: str
    key: str
    units: list[Unit] = field(default_factory=list)
    times: int = 0  # FILM's times_to_interpolate (morph)


def times_to_interpolate(count: int) -> int:
    """The smallest n whose 2^n - 1 evenly spaced in-betweens are at least count (1 to MAX_TIMES)."""
    n = 1
    while 2 ** n - 1 < count and n < MAX_TIMES:
        n += 1
    return n


def nearest(t: float, frames: int) -> int:
    """Which of FILM's frames (evenly spaced over the gap, both dreams included: frame j is at
    j/(frames-1)) shows t: the nearest one inside the gap. One frame (n = 1): FILM's midpoint, t = 0.5."""
    if frames <= 2:
        return 0
    return min(frames - 2, max(1, round(t * (frames - 1))))


def jobs(units: list[Unit], settings: Settings) -> list[Gap]:
    """The predictions units need, in order: one per caption or paint unit, one per gap of morph units."""
    from ..settings import stable_hash

    out: list[Gap] = []
    gaps: dict[str, Gap] = {}
    for u in units:
        if u.kind != "morph":
            out.append(Gap(u.name, u.kind, u.key, [u]))
            continue
        name = u.name.rsplit("_", 1)[0]
        if name not in gaps:
            times = times_to_interpolate(int(u.params["gap"]["count"]))
            key = stable_hash(model_ref("morph", settings), *u.params["gap"]["keys"], times)
            gaps[name] = Gap(name, "morph", key, [], times)
            out.append(gaps[name])
        gaps[name].units.append(u)
    return out


@register("replicate")
class ReplicateBackend(Backend):
    def __init__(self, models=None) -> None:
        super().__init__(models)
        self._client: Any = None
        self._checked: set[str] = set()
        self._stop = threading.Event()
        self._created = 0  # predictions this command created (replicate.max_predictions holds them)
        self._lock = threading.Lock()
        self._retry_after = threading.local()  # the last response's Retry-After, per thread

    runs_here = False  # the service's models: no --device, --dtype, scheduler or LoRA of this machine's
    # what it would drop, and what to do instead
    drop_hints = {"generate.lora": "give a fine-tuned model on Replicate as {replicate.paint_model}, or none",
                  "generate.controlnet": "Replicate's SDXL takes no ControlNet: give none",
                  "generate.prompt_weighting": "Replicate's SDXL reads plain prompts: give none"}

    @classmethod
    def honours(cls, kind: str, settings: Settings) -> frozenset[str]:
        """SDXL on Replicate paints with its refiner as an ensemble of experts (refine,
        high_noise_frac); no LoRA file, ControlNet or A1111 weighting. FILM interpolates the dreams
        as they were painted: the paint options do not apply to it."""
        from ..units import KINDS

        if kind == "paint":
            return frozenset({"generate.refiner"})
        return frozenset(KINDS[kind].optional)

    @classmethod
    def key_part(cls, kind: str, settings: Settings) -> dict[str, Any]:
        return {"backend": "replicate", "model": model_ref(kind, settings)}

    # -- before anything is written ------------------------------------------------------------

    def before(self, root: Path, units: list[Unit], settings: Settings, later: int = 0,
               later_gaps: int = 0) -> None:
        _check_supported(units, settings)
        _check_dreams(root, units)
        for kind in sorted({u.kind for u in units} | ({"paint"} if later else set())
                           | ({"morph"} if later_gaps else set())):
            self.load(kind, settings)  # the token and the models, before a word about the cost
        known = Journal(root).read()
        work = jobs(units, settings)
        collect = sum((j.name, j.key) in known for j in work)
        new = len(work) - collect
        parts = [f"{new} new prediction(s) of {model_ref(units[0].kind, settings)}"] if units else []
        if units and units[0].kind == "morph":
            parts[0] += f" (one per gap, for {len(units)} in-between(s))"
        if collect:
            parts.append(f"{collect} to collect from an earlier command")
        if later:
            parts.append(f"up to {later} more for the dreams ({settings.replicate.paint_model})")
        if later_gaps:
            parts.append(f"up to {later_gaps} more for the in-betweens, one per gap ({settings.replicate.morph_model})")
        say(f"replicate: {', '.join(parts) or 'no prediction to create'}")
        limit = settings.replicate.max_predictions
        later += later_gaps
        if limit is not None and new + later > limit:
            raise UserError(f"this command would create {'up to ' if later else ''}{new + later} prediction(s) on "
                            f"Replicate, more than --max-predictions {limit}; nothing was created: raise the "
                            "limit, or run fewer frames (--fps, --start, --end)")

    def load(self, kind: str, settings: Settings) -> None:
        client = self._connect()
        ref = model_ref(kind, settings)
        if ref in self._checked:
            return
        owner_name, _, version = ref.partition(":")
        try:
            if version:
                from replicate.version import Versions

                self._call(lambda: Versions(client, owner_name).get(version))
            else:
                self._call(lambda: client.models.get(owner_name))
        except _api_error() as e:
            if e.status in (404, 422):
                raise SettingError(MODEL_SETTING[kind], f"'{ref}' is no model or version on Replicate ({_detail(e)})",
                                   "give OWNER/NAME:VERSION as on the model's API page") from None
            raise self._api_failure(e, f"looking up {ref}") from None
        self._checked.add(ref)

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        try:
            import replicate
        except ImportError:
            raise UserError("--backend replicate needs the replicate client: pip install 'video2dream[replicate]'"
                            ) from None
        token = os.environ.get("REPLICATE_API_TOKEN", "").strip()
        if not token:
            raise UserError(f"--backend replicate needs an API token in REPLICATE_API_TOKEN: make one at {TOKEN_PAGE}, "
                            "then `export REPLICATE_API_TOKEN=r8_...`")
        # No base_url: the client reads REPLICATE_BASE_URL itself (a proxy, a test server).
        self._client = replicate.Client(api_token=token, event_hooks={"response": [self._note_retry_after]})
        return self._client

    def _note_retry_after(self, response: Any) -> None:
        self._retry_after.value = response.headers.get("Retry-After")

    # -- running units -------------------------------------------------------------------------

    def execute(self, root: Path, units: list[Unit], settings: Settings,
                wanted: Callable[[Unit], bool] | None = None) -> Iterator[list[Done]]:
        """One prediction per unit, up to --workers in flight; results as they finish (any order)."""
        client = self._connect()
        for kind in {u.kind for u in units}:
            self.load(kind, settings)
        journal = Journal(root)
        known = journal.read()
        pending = deque(jobs(units, settings))
        running: dict[Future, Gap] = {}
        failures: list[UserError] = []
        refused: list[tuple[Gap, str]] = []
        made: list[tuple[str, str]] = []
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=settings.workers or WORKERS, thread_name_prefix="replicate")
        try:
            while pending or running:
                while pending and not failures and len(running) < (settings.workers or WORKERS):
                    u = pending.popleft()
                    if wanted is None or any(wanted(x) for x in u.units):
                        running[pool.submit(self._one, client, root, u, settings, journal,
                                            known.get((u.name, u.key)))] = u
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    u = running.pop(f)
                    try:
                        result, prediction_id = f.result()
                    except Refused as e:
                        refused.append((u, str(e)))
                        continue
                    except UserError as e:
                        failures.append(e)
                        continue
                    made.append((u.name, u.kind))
                    yield result
                    journal.used(u, prediction_id)  # a later --force (or a lost dream) makes a new one
        finally:
            self._stop.set()  # threads still waiting stop now; their predictions stay journaled
            pool.shutdown(wait=True, cancel_futures=True)
            _note_refused(root, refused, made)
        if failures:
            raise failures[0]
        if refused:
            names = ", ".join(u.name for u, _ in refused[:5])
            raise UserError(f"Replicate's content filter refused {len(refused)} frame(s) ({names}; the others are "
                            f"made), listed in {root / REFUSED}: change their prompts (or seeds) and run the "
                            "command again")

    def _one(self, client: Any, root: Path, u: Gap, settings: Settings, journal: Journal,
             known_id: str | None) -> tuple[list[Done], str]:
        """One prediction's work: collect its journaled prediction, or create one (journaled before
        the wait); its units' results and the prediction's id."""
        prediction = self._collect(client, known_id) if known_id else None
        if prediction is not None:
            try:
                return self._finish(client, prediction, u, settings), prediction.id
            except Gone:
                pass  # its output expired: the picture is made anew
        ref = model_ref(u.kind, settings)
        prediction = self._create(client, ref, _inputs(root, u, settings), settings)
        journal.append(u, prediction.id, ref)
        try:
            return self._finish(client, prediction, u, settings), prediction.id
        except Gone:
            raise UserError(f"Replicate's prediction for {u.name} ({prediction.id}) succeeded but its output "
                            "could not be fetched; run the command again") from None

    def _finish(self, client: Any, prediction: Any, u: Gap, settings: Settings) -> list[Done]:
        ref = model_ref(u.kind, settings)
        prediction = self._wait(client, prediction, u, settings.replicate.timeout)
        if u.kind == "morph":
            return self._inbetweens(prediction.output, u, ref)
        unit = u.units[0]
        if u.kind == "paint":
            return [(unit, Painted(self._picture(prediction.output, unit), _sampler(ref), ref))]
        if prediction.output is None:
            raise Gone(prediction.id)
        return [(unit, _caption(prediction.output, unit.params["mode"]))]

    def _collect(self, client: Any, prediction_id: str) -> Any | None:
        """An earlier command's prediction, to wait on; None when it cannot give a result (failed,
        canceled, or expired from the service's records): then a new one is made."""
        try:
            prediction = self._call(lambda: client.predictions.get(prediction_id))
        except _api_error() as e:
            if e.status == 404:
                return None
            raise self._api_failure(e, f"collecting prediction {prediction_id}") from None
        return None if prediction.status in ("failed", "canceled") else prediction

    def _create(self, client: Any, ref: str, inputs: dict[str, Any], settings: Settings) -> Any:
        limit = settings.replicate.max_predictions
        with self._lock:  # a collected prediction that could not be used is paid for again: keep the limit
            if limit is not None and self._created >= limit:
                raise UserError(f"--max-predictions {limit} reached (earlier predictions could not be collected); "
                                "finished frames are kept: raise the limit and run the command again")
            self._created += 1
        owner_name, _, version = ref.partition(":")
        try:
            if version:
                return self._call(lambda: client.predictions.create(
                    version=version, input=inputs, file_encoding_strategy="base64"), creates=True)
            return self._call(lambda: client.models.predictions.create(
                model=owner_name, input=inputs, file_encoding_strategy="base64"), creates=True)
        except _api_error() as e:
            raise self._api_failure(e, f"creating a prediction of {ref}") from None
        finally:
            for value in inputs.values():
                if isinstance(value, io.IOBase):
                    value.close()

    def _wait(self, client: Any, prediction: Any, u: Gap, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while prediction.status not in ("succeeded", "failed", "canceled"):
            if time.monotonic() > deadline:
                self._cancel(client, prediction.id)
                raise UserError(f"the prediction for {u.name} ({prediction.id}) took longer than {timeout:g} s "
                                "(replicate.timeout) and was canceled; the frames finished are kept: run the "
                                "command again (a longer replicate.timeout in a --config file waits longer)")
            if self._stop.wait(client.poll_interval):
                raise Stopped(prediction.id)
            try:
                prediction = self._call(lambda p=prediction: client.predictions.get(p.id))
            except _api_error() as e:
                raise self._api_failure(e, f"waiting on prediction {prediction.id}") from None
        if prediction.status == "failed":
            error = " ".join(str(prediction.error or "no error text").split())
            if REFUSAL.search(error):
                raise Refused(error)
            raise UserError(f"Replicate's prediction for {u.name} failed: {error} (prediction {prediction.id}); "
                            "the frames finished are kept")
        if prediction.status == "canceled":
            raise UserError(f"Replicate's prediction for {u.name} ({prediction.id}) was canceled (on replicate.com?); "
                            "run the command again to make it anew")
        return prediction

    def _cancel(self, client: Any, prediction_id: str) -> None:
        try:
            self._call(lambda: client.predictions.cancel(prediction_id))
        except _api_error() as e:
            say(f"replicate: could not cancel prediction {prediction_id}: {_detail(e)}")

    def _picture(self, output: Any, u: Unit) -> Any:
        """The first image of a paint model's output (a URL, or a list of them), at the unit's size."""
        from PIL import Image

        url = output[0] if isinstance(output, list) and output else output
        if output is None:
            raise Gone(u.name)
        if not isinstance(url, str) or not url:
            raise UserError(f"Replicate's prediction for {u.name} gave no image (output {str(output)[:80]!r}); "
                            "is replicate.paint_model a text-to-image model?")
        with Image.open(io.BytesIO(self._fetch(url, u.name))) as im:
            image = im.convert("RGB")
        return _sized(image, u)

    def _fetch(self, url: str, name: str) -> bytes:
        """An output file's bytes; Gone when the service no longer keeps it."""
        import httpx

        try:
            return self._call(lambda: self._download(url))
        except httpx.HTTPStatusError as e:
            if e.response.status_code in (403, 404, 410):
                raise Gone(name) from None  # expired (a network error is not: that is a UserError)
            raise UserError(f"downloading {name}'s output failed: HTTP {e.response.status_code} from "
                            f"{e.request.url}; run the command again (the prediction is collected)") from None

    def _inbetweens(self, output: Any, gap: Gap, ref: str) -> list[Done]:
        """A gap's in-betweens from FILM's output: one PNG (times_to_interpolate 1: the midpoint), an
        mp4 of 2^n + 1 frames (both dreams included), or a list of picture URLs in the same order.
        Each unit gets the frame nearest its t (see nearest)."""
        if output is None:
            raise Gone(gap.name)
        urls = output if isinstance(output, list) else [output]
        if not urls or not all(isinstance(x, str) and x for x in urls):
            raise UserError(f"Replicate's prediction for the in-betweens {gap.name} gave no picture or video "
                            f"(output {str(output)[:80]!r}); is replicate.morph_model a frame interpolation "
                            "model (frame1, frame2, times_to_interpolate)?")
        frames = [f for url in urls for f in _frames(self._fetch(url, gap.name), gap.name)]
        return [(u, Painted(_sized(frames[nearest(u.params["t"], len(frames))], u), "FILM", ref))
                for u in gap.units]

    def _download(self, url: str) -> bytes:
        import base64

        import httpx

        if url.startswith("data:"):
            return base64.b64decode(url.partition(",")[2])
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True) as http:
            response = http.get(url)  # no token: outputs are served without one
            self._retry_after.value = response.headers.get("Retry-After")
            response.raise_for_status()
            return response.content

    # -- retries and errors --------------------------------------------------------------------

    def _call(self, request: Callable[[], Any], creates: bool = False) -> Any:
        """request(), tried again with backoff on 429, 5xx and network errors (Retry-After honoured).
        creates: a request that makes a prediction is sent again after a network error only when it
        never reached the service (it could have been made, and paid, otherwise)."""
        import httpx

        for attempt in range(1, TRIES + 1):
            self._retry_after.value = None
            try:
                return request()
            except (*_api_error_types(), httpx.HTTPStatusError, httpx.TransportError) as e:
                status = _status(e)
                network = isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout) if creates else httpx.TransportError)
                if attempt == TRIES or not (status in RETRY_STATUS or network):
                    if isinstance(e, httpx.TransportError) and creates and not network:
                        raise UserError(f"a request to create a prediction got no answer ({e.__class__.__name__}); "
                                        "it may have been made: see replicate.com/predictions, then run the "
                                        "command again") from None
                    if isinstance(e, httpx.TransportError):
                        raise UserError(f"cannot reach Replicate ({e.__class__.__name__}: {e}); check the network "
                                        "(or REPLICATE_BASE_URL) and run the command again") from None
                    raise
            if self._stop.wait(_backoff(attempt, getattr(self._retry_after, "value", None))):
                raise Stopped("stopping")
        raise AssertionError("unreachable")

    def _api_failure(self, e: Any, doing: str) -> UserError:
        if e.status == 401:
            return UserError(f"Replicate refused the token in REPLICATE_API_TOKEN (401: {_detail(e)}); "
                             f"check it at {TOKEN_PAGE}")
        if e.status == 402:
            return UserError(f"Replicate refused {doing}: {_detail(e)} (402: add credit at replicate.com)")
        return UserError(f"Replicate refused {doing}: {_detail(e)} (HTTP {e.status})")


def _sized(image: Any, u: Unit) -> Any:
    """image at the unit's size (SDXL img2img paints at the init image's size, FILM's video at even
    sizes): every picture must be the run's size."""
    from PIL import Image

    size = (u.params["width"], u.params["height"])
    return image if image.size == size else image.resize(size, Image.LANCZOS)


def _frames(data: bytes, name: str) -> list[Any]:
    """The pictures in an output file: a picture is one, a video is decoded by ffmpeg, every frame."""
    import tempfile

    from PIL import Image

    from .. import media

    try:
        with Image.open(io.BytesIO(data)) as im:
            return [im.convert("RGB")]
    except Exception:  # not a picture: a video
        pass
    with tempfile.TemporaryDirectory(prefix="video2dream-film-") as tmp:
        video = Path(tmp) / "film.mp4"
        video.write_bytes(data)
        media.run_ffmpeg(["-protocol_whitelist", "file", "-i", media.arg(video),
                          media.image_pattern(tmp, "%05d.png")], f"decode the in-betweens of {name}")
        frames = []
        for path in sorted(Path(tmp).glob("*.png")):
            with Image.open(path) as im:
                frames.append(im.convert("RGB"))
    if not frames:
        raise UserError(f"Replicate's video for the in-betweens {name} has no frame; run the command again")
    return frames


def _api_error() -> type:
    from replicate.exceptions import ReplicateError

    return ReplicateError


def _api_error_types() -> tuple[type, ...]:
    return (_api_error(),)


def _status(e: Exception) -> int | None:
    if hasattr(e, "response") and getattr(e, "response", None) is not None:
        return e.response.status_code
    return getattr(e, "status", None)


def _detail(e: Any) -> str:
    text = e.detail or e.title or "no details"
    return " ".join(str(text).split())[:300]


def _backoff(attempt: int, retry_after: str | None) -> float:
    if retry_after and retry_after.strip().replace(".", "", 1).isdigit():
        return min(float(retry_after), MAX_WAIT)
    return min(0.5 * 2 ** (attempt - 1), MAX_WAIT) * random.uniform(0.8, 1.2)


def _check_supported(units: list[Unit], settings: Settings) -> None:
    """What the service's models cannot do, refused before anything is paid."""
    if any(u.kind == "caption" for u in units) and settings.interrogate.mode == "negative":
        raise SettingError("interrogate.mode", "'negative' needs a caption and a negative chain, which "
                           "replicate.caption_model does not give", "with --backend replicate use best, classic, "
                           "fast or caption")


def _check_dreams(root: Path, units: list[Unit]) -> None:
    """FILM interpolates the two dreams themselves: each must be there and current (the one the
    in-between's key names), or the in-betweens would show the old pictures under new keys."""
    from ..stages.engine import is_current

    checked: dict[str, bool] = {}
    for u in units:
        if u.kind != "morph":
            continue
        for path, key in zip(u.inputs[-2:], u.params["gap"]["keys"], strict=True):
            if path not in checked:
                checked[path] = is_current(root / path, key)
            if not checked[path]:
                raise UserError(f"in-betweens on Replicate are interpolated from the dreams, and {path} is missing "
                                f"or not current; run `video2dream generate {root} --backend replicate` first "
                                "(`run --transition morph` does)")


def _inputs(root: Path, job: Gap, settings: Settings) -> dict[str, Any]:
    """The model's input for a job; a picture as an open file, which the client sends as a data URL."""
    u = job.units[0]
    if job.kind == "morph":
        return {"frame1": open(root / u.inputs[-2], "rb"),  # noqa: SIM115 - closed after create
                "frame2": open(root / u.inputs[-1], "rb"),  # noqa: SIM115
                "times_to_interpolate": job.times}
    p = u.params
    if u.kind == "caption":
        inputs: dict[str, Any] = {"image": open(root / u.inputs[0], "rb"),  # noqa: SIM115 - closed after create
                                  "mode": "fast" if p["mode"] == "caption" else p["mode"]}
        if settings.interrogate.clip_model in CLIP_NAMES:
            inputs["clip_model_name"] = settings.interrogate.clip_model
        return inputs
    inputs = {"prompt": p["prompt"], "negative_prompt": p["negative_prompt"], "width": p["width"],
              "height": p["height"], "num_inference_steps": p["steps"], "guidance_scale": p["guidance"],
              "seed": p["seed"], "num_outputs": 1}
    if p["strength"]:
        inputs["image"] = open(root / u.inputs[0], "rb")  # noqa: SIM115 - closed after create
        inputs["prompt_strength"] = p["strength"]
    if p.get("refiner"):  # SDXL on Replicate: its refiner as an ensemble of experts, from the switch point
        inputs["refine"] = "expert_ensemble_refiner"
        inputs["high_noise_frac"] = p["refiner_switch"]
    return inputs


def _caption(output: Any, mode: str) -> Caption:
    """A CLIP Interrogator's text: its BLIP caption, then ", " and the flavors it found."""
    text = "".join(output) if isinstance(output, list) else str(output or "")
    text = " ".join(text.split())
    caption = text.split(",")[0].strip()
    return Caption(caption, caption if mode == "caption" else text, "")


def _sampler(ref: str) -> str:
    return "Euler" if ref.startswith("stability-ai/sdxl") else "the model's default"  # SDXL's default: K_EULER


class Journal:
    """.video2dream/predictions.jsonl: one line per prediction created, {name, key, kind, id, model, at},
    appended and fsynced before the command waits on it; and one {name, key, id, used: true} once its
    result was handed on. A later command collects the last prediction of a (name, key) not yet used."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".video2dream" / JOURNAL
        self._lock = threading.Lock()

    def read(self) -> dict[tuple[str, str], str]:
        known: dict[tuple[str, str], str] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return known
        for line in lines:
            try:
                entry = json.loads(line)
                unit = (entry["name"], entry["key"])
                if entry.get("used"):
                    if known.get(unit) == entry["id"]:
                        del known[unit]
                else:
                    known[unit] = entry["id"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill: its prediction was not waited on
        return known

    def used(self, u: Gap, prediction_id: str) -> None:
        self._write(json.dumps({"name": u.name, "key": u.key, "id": prediction_id, "used": True}), sync=False)

    def append(self, u: Gap, prediction_id: str, ref: str) -> None:
        line = json.dumps({"name": u.name, "key": u.key, "kind": u.kind, "id": prediction_id, "model": ref,
                           "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, ensure_ascii=False)
        self._write(line, sync=True)

    def _write(self, line: str, sync: bool) -> None:
        """Append a line; sync: on the disk before this returns (a lost `used` line costs nothing)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                if sync:
                    os.fsync(f.fileno())


def _note_refused(root: Path, refused: list[tuple[Gap, str]], made: list[tuple[str, str]]) -> None:
    """refused.csv: the frames the content filter refused, kept until they are made."""
    import pandas as pd

    from ..tables import read_loose, write_csv

    path = root / REFUSED
    rows = read_loose(path).to_dict("records") if path.is_file() and path.stat().st_size else []
    gone = set(made) | {(u.name, u.kind) for u, _ in refused}
    rows = [r for r in rows if (r.get("filename"), r.get("kind")) not in gone]
    rows += [{"filename": u.name, "kind": u.kind, "error": error} for u, error in refused]
    if rows:
        write_csv(path, pd.DataFrame(rows, columns=["filename", "kind", "error"]))
    elif path.is_file():
        path.unlink()  # every frame it listed is made now
