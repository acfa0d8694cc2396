"""The replicate backend: each unit is one prediction on Replicate's API (replicate.com), through the
official `replicate` client (pip install 'video2dream[replicate]'), for users without a GPU.

Captions come from replicate.caption_model (a CLIP Interrogator: image -> text), dreams from
replicate.paint_model (SDXL: prompt, ... -> a list of image URLs), in-betweens from
replicate.morph_model (FILM: the two dreams -> the gap's in-betweens, one prediction per gap; see
Gap). A remote result is not a local one: key_part puts the backend's name and the model version
into every unit's key.

Never pay twice: the intent to create (unit, model, a hash of the input) is appended (and fsynced)
to .video2dream/predictions.jsonl before the request is sent, and the prediction's id once it is
answered; a later command that needs the same unit (same frame, same key) collects that prediction by
id, and one whose intent has no id (killed while the create was on its way, or answered with an
error that does not say whether it was made) is looked for among the account's recent predictions
(model and input) before another is created. A create is sent again blindly only after a refused
connection or a 429: nothing was made then. A prediction is marked used once the stage has committed
its output (the PNG renamed into place, the row written), so a kill in between collects it again.
Ctrl-C (or a kill) leaves the predictions in flight running and journaled: the next command collects
them (a cancel would be paid all the same, and lose the picture). A prediction slower than
replicate.timeout is canceled. A content-filter refusal marks its frame in refused.csv and the
others go on. An output is read with a bound on its bytes and pixels (from the size asked for).

The client itself reads REPLICATE_API_TOKEN and REPLICATE_BASE_URL (tests and proxies).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mimetypes
import os
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SettingError, UserError, short
from ..progress import say
from ..settings import PER_CALL, PER_UNIT, SPEED, check_setting, register_section, setting, within
from ..units import Unit
from .base import Backend, Caption, Done, Painted, register

if TYPE_CHECKING:
    from ..settings import Settings

JOURNAL = "predictions.jsonl"  # in the run folder's .video2dream/
REFUSED = "refused.csv"  # in the run folder: the frames the service's content filter refused
WORKERS = 4  # predictions in flight when --workers is not given
RETRY_STATUS = {429, 500, 502, 503, 504}  # a request that makes nothing is tried again on these
TRIES = 8  # per request, on 429, 5xx and network errors
CONNECT_TRIES = 3  # a refused connection: about 1.5 s of tries, then one line (an unknown host: one try)
UNREADABLE_TRIES = 3  # an answer that is not the JSON asked for
LOOKUP_WAITS = (0.0, 1.0, 3.0)  # after an uncertain create: look for the prediction now, then twice more
LOOKUP_PAGES = 20  # of the account's predictions (newest first), at most, per look
LOOKUP_SLACK = 600.0  # seconds before an intent that a prediction's created_at may still be (clocks differ)
FILE_KEYS = ("image", "frame1", "frame2")  # the inputs that are pictures (sent as data URLs)
PIXEL_SLACK = 4  # an output may hold up to this many times the pixels expected; more is refused undecoded
API_URL = "https://api.replicate.com"
MAX_WAIT = 60.0  # seconds between two tries, at most (a longer Retry-After is cut to this)
# How Replicate's models say their safety checker refused (SDXL: "NSFW content detected ...").
REFUSAL = re.compile(r"nsfw|safety checker|content (filter|policy)|flagged as sensitive", re.IGNORECASE)
CLIP_NAMES = ("ViT-L-14/openai", "ViT-H-14/laion2b_s32b_b79k", "ViT-bigG-14/laion2b_s39b_b160k")
TOKEN_PAGE = "https://replicate.com/account/api-tokens"
MAX_TIMES = 8  # FILM's largest times_to_interpolate: 2^8 - 1 = 255 in-betweens per gap
MODEL_SETTING = {"caption": "replicate.caption_model", "paint": "replicate.paint_model",
                 "morph": "replicate.morph_model"}
# A Replicate model: OWNER/NAME[:VERSION], each part starting with a letter or digit (never ./x or ../x).
REPLICATE_REF = re.compile(r"[A-Za-z0-9][\w-]*/[A-Za-z0-9][\w.-]*(:[0-9a-f]{16,})?", re.ASCII)


@dataclass
class ReplicateSettings:
    """--backend replicate: the models it runs on Replicate's service (OWNER/NAME:VERSION, or OWNER/NAME
    for an official model), and how it waits on them. The models are hashed into each unit's key by the
    backend itself (key_part), only when it is the backend: PER_UNIT. The section `replicate:` is this
    backend's own, registered with the settings below."""

    caption_model: str = setting(  # a CLIP Interrogator: image, mode, clip_model_name -> text
        "pharmapsychotic/clip-interrogator:8151e1c9f47e696fa316146a2e35812ccf79cfc9eba05b11c7f450155102af70",
        PER_UNIT)
    paint_model: str = setting(  # SDXL: prompt, negative_prompt, width, height, seed, image, ... -> [url]
        "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b", PER_UNIT)
    morph_model: str = setting(  # FILM: frame1, frame2, times_to_interpolate -> a PNG (1) or an mp4 (2^n + 1 frames)
        "google-research/frame-interpolation:4f88a16a13673a8b589c18866e540556170a5bcb2ccdc12de556e800e9456d3d",
        PER_UNIT)
    timeout: float = setting(600.0, SPEED)  # seconds one prediction may take before it is canceled
    max_predictions: int | None = setting(None, PER_CALL)  # refuse a command that would create more


def _check_models(s: Settings, origins: dict[str, str] | None) -> None:
    for name in ("caption_model", "paint_model", "morph_model"):
        value = getattr(s.replicate, name)
        check_setting(REPLICATE_REF.fullmatch(value) is not None, f"replicate.{name}",
                      f"must look like OWNER/NAME:VERSION (or OWNER/NAME for an official model), got {short(value)}",
                      f"e.g. {getattr(ReplicateSettings(), name)}", origins=origins)


register_section("replicate", ReplicateSettings, ranges=[
    ("replicate.timeout", lambda v: 0 < v <= 86400, "a positive number of seconds, at most 86400"),
    ("replicate.max_predictions", within(0, 10**9, none_ok=True), "a whole number >= 0 (or none: no limit)"),
], check=_check_models)


class Refused(Exception):
    """The service's content filter refused a unit: its frame is marked, the others go on."""


class Gone(Exception):
    """A collected prediction's output is no longer kept by the service (after about an hour)."""


class Stopped(Exception):
    """The command is stopping (Ctrl-C, an error elsewhere): stop waiting; the prediction stays journaled."""


class Uncertain(Exception):
    """A create was answered in a way that does not say whether the prediction was made (a 5xx, a lost
    or unreadable answer): it must be looked for before another is created."""


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
        self._journal: Journal | None = None
        self._root = Path(".")
        self._handed: dict[tuple[str, str, str], list[Any]] = {}  # unit -> [job, prediction id, units left]
        self._resized: list[str] = []  # outputs at another size than expected: "name (17x9 for 320x192)"

    # What `run` announced before its first stage (root -> the work it named): that stage says it once.
    _told: dict[Path, set[tuple[str, str]]] = {}

    runs_here = False  # the service's models: no --device, --dtype, scheduler or LoRA of this machine's
    # what it would drop, and what to do instead
    drop_hints = {"generate.lora": "give a fine-tuned model on Replicate as {replicate.paint_model}, or none",
                  "generate.controlnet": "Replicate's SDXL takes no ControlNet: give none",
                  "generate.prompt_weighting": "Replicate's SDXL reads plain prompts: give none",
                  "generate.scheduler": "the model on Replicate runs its own scheduler: give none (or default)",
                  "generate.vae": "the model on Replicate decodes with its own VAE: give none",
                  "generate.preview_vae": "the model on Replicate decodes with its own VAE: give none"}

    @classmethod
    def honours(cls, kind: str, settings: Settings) -> frozenset[str]:
        """SDXL on Replicate paints with its refiner as an ensemble of experts (refine,
        high_noise_frac); no LoRA file, ControlNet, A1111 weighting, scheduler or VAE of one's own.
        FILM interpolates the dreams as they were painted: the paint options do not apply to it."""
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
        journal = Journal(root)
        known, intents = journal.read(), journal.intents()
        work = jobs(units, settings)
        collect = sum((j.name, j.key) in known for j in work)
        look = sum((j.name, j.key) not in known and (j.name, j.key) in intents for j in work)
        new = len(work) - collect
        parts = [f"{new} new prediction(s) of {model_ref(units[0].kind, settings)}"] if units else []
        if units and units[0].kind == "morph":
            parts[0] += f" (one per gap, for {len(units)} in-between(s))"
        if collect:
            parts.append(f"{collect} to collect from an earlier command")
        if look:
            parts[0] += f" ({look} of them first looked for: an earlier command may have made them)"
        if later:
            parts.append(f"up to {later} more for the dreams ({settings.replicate.paint_model})")
        if later_gaps:
            parts.append(f"up to {later_gaps} more for the in-betweens, one per gap ({settings.replicate.morph_model})")
        named = {(j.name, j.key) for j in work}
        if ReplicateBackend._told.pop(root, None) != named:  # `run` said it already for its first stage
            say(f"replicate: {', '.join(parts) or 'no prediction to create'}")
        limit = settings.replicate.max_predictions
        later += later_gaps
        if limit is not None and new + later > limit:
            raise UserError(f"this command would create {'up to ' if later else ''}{new + later} prediction(s) on "
                            f"Replicate, more than {{replicate.max_predictions}} {limit}; nothing was created: "
                            "raise the limit, or run fewer frames (--fps, --start, --end)",
                            paths=("replicate.max_predictions",))
        if later:
            ReplicateBackend._told[root] = named

    @classmethod
    def check_ready(cls, settings: Settings) -> None:
        """The client is installed and a token given: checked before anything is written."""
        _client_module()
        _token()

    def load(self, kind: str, settings: Settings) -> None:
        client = self._connect()
        ref = model_ref(kind, settings)
        if ref in self._checked:
            return
        owner_name, _, version = ref.partition(":")
        try:
            if version:
                from replicate.version import Versions

                self._call(lambda: Versions(client, owner_name).get(version), f"looking up {ref}")
            else:
                self._call(lambda: client.models.get(owner_name), f"looking up {ref}")
        except _api_error() as e:
            if e.status in (404, 422):
                raise SettingError(MODEL_SETTING[kind], f"'{ref}' is no model or version on Replicate ({_detail(e)})",
                                   "give OWNER/NAME:VERSION as on the model's API page") from None
            raise self._api_failure(e, f"looking up {ref}") from None
        self._checked.add(ref)

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        replicate = _client_module()
        # No base_url: the client reads REPLICATE_BASE_URL itself (a proxy, a test server).
        self._client = replicate.Client(api_token=_token(), event_hooks={"response": [self._note_retry_after]})
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
        journal = self._journal = Journal(root)
        self._root = root
        known = journal.read()
        work = jobs(units, settings)
        known.update(self._recover(client, journal, work, known, settings))
        pending = deque(work)
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
                    with self._lock:  # marked used once the stage has committed every unit (committed)
                        for unit, _ in result:
                            self._handed[(unit.kind, unit.name, unit.key)] = [u, prediction_id, len(result)]
                    yield result
        finally:
            self._stop.set()  # threads still waiting stop now; their predictions stay journaled
            pool.shutdown(wait=True, cancel_futures=True)
            _note_refused(root, refused, made)
            if self._resized:
                say(f"replicate: {len(self._resized)} output(s) came at another size than asked and were resized "
                    f"to the run's ({', '.join(self._resized[:3])}); check the model's size inputs")
                self._resized = []
        if failures:
            raise failures[0]
        if refused:
            names = ", ".join(u.name for u, _ in refused[:5])
            raise UserError(f"Replicate's content filter refused {len(refused)} frame(s) ({names}; the others are "
                            f"made), listed in {root / REFUSED}: change their prompts (or seeds) and run the "
                            "command again")

    def committed(self, units: list[Unit]) -> None:
        """The stage has committed these units' outputs: a prediction whose units are all on disk is
        marked used (a later --force makes a new one); until then a rerun collects it again."""
        done = []
        with self._lock:
            for unit in units:
                entry = self._handed.get((unit.kind, unit.name, unit.key))
                if entry is None:
                    continue
                entry[2] -= 1
                if entry[2] <= 0:
                    del self._handed[(unit.kind, unit.name, unit.key)]
                    done.append(entry)
        for job, prediction_id, _ in done:
            if self._journal is not None:
                self._journal.used(job, prediction_id)

    def _recover(self, client: Any, journal: Journal, work: list[Gap], known: dict[tuple[str, str], str],
                 settings: Settings) -> dict[tuple[str, str], str]:
        """The predictions an earlier command may have made without learning their ids (killed while
        the create was on its way, or answered with an error), looked for among the account's recent
        predictions; those found are journaled and collected, the others are created anew."""
        intents = journal.intents()
        lost = {(j.name, j.key): (j, intents[(j.name, j.key)]) for j in work
                if (j.name, j.key) not in known and (j.name, j.key) in intents}
        if not lost:
            return {}
        found = self._find(client, {k: i for k, (_, i) in lost.items()}, journal.ids())
        for unit, prediction in found.items():
            journal.append(lost[unit][0], prediction.id, lost[unit][1]["model"])
        say(f"replicate: {len(found)} of {len(lost)} prediction(s) an earlier command may have made found "
            "among the account's recent ones, and collected")
        return {unit: prediction.id for unit, prediction in found.items()}

    def _one(self, client: Any, root: Path, u: Gap, settings: Settings, journal: Journal,
             known_id: str | None) -> tuple[list[Done], str]:
        """One prediction's work: collect its journaled prediction, or create one (its intent
        journaled before the request, its id before the wait); its units' results and its id."""
        prediction = self._collect(client, known_id) if known_id else None
        if prediction is not None:
            try:
                return self._finish(client, prediction, u, settings), prediction.id
            except Gone:
                pass  # its output expired: the picture is made anew
        prediction = self._make(client, root, u, settings, journal)
        try:
            return self._finish(client, prediction, u, settings), prediction.id
        except Gone:
            raise UserError(f"Replicate's prediction for {u.name} ({prediction.id}) succeeded but its output "
                            "could not be fetched; run the command again") from None

    def _make(self, client: Any, root: Path, u: Gap, settings: Settings, journal: Journal) -> Any:
        """A new prediction for u, never paid twice: the intent is on the disk before the request; an
        answer that does not say whether it was made is followed by a look among the account's
        predictions, and only one not found there is sent again."""
        ref = model_ref(u.kind, settings)
        inputs = _inputs(root, u, settings)
        self._count_create(settings)
        intent = journal.intent(u, ref, _input_hash(inputs))
        for attempt in range(1, TRIES + 1):
            try:
                prediction = self._create(client, ref, inputs)
            except Uncertain as e:
                found = self._look_for(client, u, intent, journal)
                if found is not None:
                    journal.append(u, found.id, ref)
                    return found
                if attempt == TRIES:
                    raise UserError(f"Replicate gave no clear answer to {TRIES} requests to create the prediction "
                                    f"for {u.name} (the last: {e}), and made none of them; run the command again "
                                    "later") from None
                if self._stop.wait(_backoff(attempt, None)):
                    raise Stopped("stopping") from None
                continue
            except BaseException:
                journal.nothing(u, intent)  # a sure failure (refused, 4xx, 429s): nothing was made
                raise
            journal.append(u, prediction.id, ref)
            return prediction
        raise AssertionError("unreachable")

    def _look_for(self, client: Any, u: Gap, intent: dict[str, Any], journal: Journal) -> Any | None:
        """The prediction an uncertain create made, if the service lists it (now, or a little later)."""
        for wait_s in LOOKUP_WAITS:
            if self._stop.wait(wait_s):
                raise Stopped("stopping")
            try:
                found = self._find(client, {(u.name, u.key): intent}, journal.ids())
            except UserError as e:
                raise UserError(f"a request to create the prediction for {u.name} got an uncertain answer, and "
                                f"looking for it failed ({e}); run the command again: it looks for it before "
                                "creating another") from None
            if found:
                return found[(u.name, u.key)]
        return None

    def _find(self, client: Any, wanted: dict[tuple[str, str], dict[str, Any]], claimed: set[str]) -> dict:
        """Among the account's predictions (newest first, back to a little before the oldest intent),
        the one each intent made: the same model (and version) and the same input, not journaled for
        another unit."""
        found: dict[tuple[str, str], Any] = {}
        oldest = min(float(i.get("t", 0)) for i in wanted.values()) - LOOKUP_SLACK
        cursor: Any = ...
        for _ in range(LOOKUP_PAGES):
            page = self._call(lambda c=cursor: client.predictions.list(c), "listing the account's predictions")
            for prediction in page.results:
                if prediction.id in claimed:
                    continue
                for unit, intent in wanted.items():
                    if unit not in found and self._made_by(prediction, intent):
                        found[unit] = prediction
                        claimed = claimed | {prediction.id}
                        break
            if len(found) == len(wanted) or not page.next or not page.results \
                    or _created(page.results[-1]) < oldest:
                break
            cursor = page.next
        return found

    def _made_by(self, prediction: Any, intent: dict[str, Any]) -> bool:
        owner_name, _, version = str(intent.get("model", "")).partition(":")
        if (prediction.version != version) if version else (getattr(prediction, "model", None) != owner_name):
            return False
        listed = prediction.input if isinstance(prediction.input, dict) else {}
        want = intent.get("input") or {}
        if _fields_hash(listed) != want.get("fields"):
            return False
        files = {}
        for k, v in listed.items():
            if k in FILE_KEYS:
                try:
                    data = self._file_bytes(v)
                except UserError:
                    return False
                files[k] = hashlib.sha256(data).hexdigest()
        return files == want.get("files")

    def _file_bytes(self, value: Any) -> bytes:
        """A picture input as the listing gives it: a data URL, or a URL of the service's copy."""
        if isinstance(value, str) and value.startswith("data:"):
            return base64.b64decode(value.partition(",")[2])
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return self._call(lambda: self._download(value, 64 << 20, "an input"), "fetching a prediction's input")
        raise UserError("not a file")

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
            prediction = self._call(lambda: client.predictions.get(prediction_id),
                                    f"collecting prediction {prediction_id}")
        except _api_error() as e:
            if e.status == 404:
                return None
            raise self._api_failure(e, f"collecting prediction {prediction_id}") from None
        return None if prediction.status in ("failed", "canceled") else prediction

    def _count_create(self, settings: Settings) -> None:
        limit = settings.replicate.max_predictions
        with self._lock:  # a collected prediction that could not be used is paid for again: keep the limit
            if limit is not None and self._created >= limit:
                raise UserError(f"{{replicate.max_predictions}} {limit} reached (earlier predictions could not be "
                                "collected); finished frames are kept: raise the limit and run the command again",
                                paths=("replicate.max_predictions",))
            self._created += 1

    def _create(self, client: Any, ref: str, inputs: dict[str, Any]) -> Any:
        """One request to create a prediction (tried again only where nothing was made); Uncertain when
        the answer does not say whether it was made."""
        owner_name, _, version = ref.partition(":")
        doing = f"creating a prediction of {ref}"
        try:
            if version:
                return self._call(lambda: client.predictions.create(version=version, input=inputs), doing,
                                  creates=True)
            return self._call(lambda: client.models.predictions.create(model=owner_name, input=inputs), doing,
                              creates=True)
        except _api_error() as e:
            raise self._api_failure(e, doing) from None

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
                prediction = self._call(lambda p=prediction: client.predictions.get(p.id),
                                        f"waiting on prediction {prediction.id}")
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
            self._call(lambda: client.predictions.cancel(prediction_id), f"canceling prediction {prediction_id}")
        except _api_error() as e:
            say(f"replicate: could not cancel prediction {prediction_id}: {_detail(e)}")

    def _picture(self, output: Any, u: Unit) -> Any:
        """The first image of a paint model's output (a URL, or a list of them), at the unit's size."""
        url = output[0] if isinstance(output, list) and output else output
        if output is None:
            raise Gone(u.name)
        if not isinstance(url, str) or not url:
            raise UserError(f"Replicate's prediction for {u.name} gave no image (output {str(output)[:80]!r}); "
                            "is replicate.paint_model a text-to-image model?")
        sizes = _expected_sizes(u, self._root)
        most = PIXEL_SLACK * max(w * h for w, h in sizes)
        image = _decode(self._fetch(url, u.name, 4 * most + (1 << 20)), u.name, most)
        if image is None:
            raise UserError(f"Replicate's output for {u.name} is not a picture; run the command again (it fetches "
                            "the same prediction's output anew)")
        return self._sized(image, u, sizes)

    def _sized(self, image: Any, u: Unit, sizes: list[tuple[int, int]]) -> Any:
        """image at the unit's size; one at an unexpected size (not the asked one, nor the init image's,
        give or take a codec's rounding) is resized all the same, and counted for the warning."""
        if not any(abs(image.width - w) <= 8 and abs(image.height - h) <= 8 for w, h in sizes):
            with self._lock:
                self._resized.append(f"{u.name}: {image.width}x{image.height} for {sizes[0][0]}x{sizes[0][1]}")
        return _sized(image, u)

    def _fetch(self, url: str, name: str, limit: int) -> bytes:
        """An output file's bytes (at most limit); Gone when the service no longer keeps it."""
        import httpx

        try:
            return self._call(lambda: self._download(url, limit, name), f"downloading {name}'s output")
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
        first = gap.units[0]
        sizes = _expected_sizes(first, self._root)
        most = PIXEL_SLACK * max(w * h for w, h in sizes)
        pictures = 2 ** gap.times + 1  # FILM's frames, both dreams included
        limit = pictures * 3 * sizes[0][0] * sizes[0][1] + (1 << 20)  # a video: at most its frames raw
        frames = [f for url in urls for f in _frames(self._fetch(url, gap.name, limit), gap.name, most)]
        return [(u, Painted(self._sized(frames[nearest(u.params["t"], len(frames))], u, sizes), "FILM", ref))
                for u in gap.units]

    def _download(self, url: str, limit: int, name: str) -> bytes:
        """A file's bytes, streamed: more than limit is refused before it is all read."""
        import httpx

        too_big = UserError(f"Replicate's output for {name} is larger than {limit / 2**20:.1f} MB, more than a "
                            "picture of the size asked for can be; it was not used (check the model's size inputs)")
        if url.startswith("data:"):
            data = url.partition(",")[2]
            if len(data) * 3 // 4 > limit:
                raise too_big
            return base64.b64decode(data)
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True) as http, \
                http.stream("GET", url) as response:  # no token: outputs are served without one
            self._retry_after.value = response.headers.get("Retry-After")
            response.raise_for_status()
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                raise too_big
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise too_big
                chunks.append(chunk)
            return b"".join(chunks)

    # -- retries and errors --------------------------------------------------------------------

    def _call(self, request: Callable[[], Any], doing: str, creates: bool = False) -> Any:
        """request(), tried again with backoff on 429, 5xx, unreadable answers and network errors
        (Retry-After honoured); a refused connection or an unknown host gives up within seconds.
        creates: a request that makes a prediction is sent again only when nothing was made (a refused
        connection, a 429); any other failure raises Uncertain (it may have been made, and paid)."""
        import httpx

        unreadable = 0
        for attempt in range(1, TRIES + 1):
            self._retry_after.value = None
            try:
                return request()
            except (*_api_error_types(), httpx.HTTPStatusError, httpx.TransportError, ValueError, KeyError,
                    TypeError) as e:
                status = _status(e)
                if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):  # nothing was sent
                    if attempt >= CONNECT_TRIES or _no_such_host(e) or isinstance(e, httpx.ConnectTimeout):
                        raise UserError(f"cannot reach Replicate at {_address(e)} ({_short(e)}) while {doing}; check "
                                        "the network (or REPLICATE_BASE_URL) and run the command again") from None
                    if self._stop.wait(0.5 * attempt):
                        raise Stopped("stopping") from None
                    continue
                if isinstance(e, (ValueError, KeyError, TypeError)):  # an answer that is not the JSON asked for
                    if creates:
                        raise Uncertain(f"an unreadable answer: {_short(e)}") from None
                    unreadable += 1
                    if unreadable >= UNREADABLE_TRIES:
                        raise UserError(f"Replicate's answer to {doing} could not be read ({_short(e)}: not the "
                                        "JSON expected, perhaps a proxy's page); run the command again (predictions "
                                        "made are collected)") from None
                elif creates and status != 429 and (status is None or status >= 500):
                    raise Uncertain(f"HTTP {status}" if status else _short(e)) from None
                elif attempt == TRIES or not (status in RETRY_STATUS or isinstance(e, httpx.TransportError)):
                    if isinstance(e, httpx.TransportError):
                        raise UserError(f"cannot reach Replicate at {_address(e)} ({_short(e)}) while {doing}; check "
                                        "the network (or REPLICATE_BASE_URL) and run the command again") from None
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


def _expected_sizes(u: Unit, root: Path) -> list[tuple[int, int]]:
    """The sizes an output may come at: the one asked for, and for img2img the frame's (SDXL on
    Replicate paints at the init image's size). The frame's size is read from its header only."""
    sizes = [(int(u.params["width"]), int(u.params["height"]))]
    if u.kind == "paint" and u.params.get("strength") and u.inputs:
        from PIL import Image

        try:
            with Image.open(root / u.inputs[0]) as im:
                sizes.append(im.size)
        except (OSError, ValueError):
            pass
    return sizes


def _decode(data: bytes, name: str, most: int) -> Any | None:
    """A picture's pixels (RGB); its size is checked against most (pixels) before it is decoded. None
    when data is no picture; a damaged one is one line."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"Replicate's output for {name} is a damaged picture ({_short(e)}); run the command "
                        "again (it fetches the same prediction's output anew)") from None
    with im:
        if im.width * im.height > most:
            raise UserError(f"Replicate's output for {name} is {im.width}x{im.height}, far more pixels than asked "
                            "for; it was not decoded (check the model's size inputs)")
        try:
            return im.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise UserError(f"Replicate's output for {name} is a damaged picture ({_short(e)}); run the command "
                            "again (it fetches the same prediction's output anew)") from None


def _frames(data: bytes, name: str, most: int) -> list[Any]:
    """The pictures in an output file: a picture is one, a video is decoded by ffmpeg, every frame;
    no frame may hold more than most pixels."""
    import tempfile

    from PIL import Image

    from .. import media

    picture = _decode(data, name, most)
    if picture is not None:
        return [picture]
    with tempfile.TemporaryDirectory(prefix="video2dream-film-") as tmp:
        video = Path(tmp) / "film.mp4"
        video.write_bytes(data)
        try:
            probe = media.probe(video)
        except UserError:
            raise UserError(f"Replicate's output for the in-betweens {name} is neither a picture nor a video "
                            "ffmpeg can read; run the command again (it fetches the same output anew)") from None
        if probe.width * probe.height > most:
            raise UserError(f"Replicate's video for the in-betweens {name} is {probe.width}x{probe.height}, far more "
                            "pixels than asked for; it was not decoded (check replicate.morph_model)")
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


def _client_module() -> Any:
    try:
        import replicate
    except ImportError:
        raise UserError("{backend} replicate needs the replicate client: pip install 'video2dream[replicate]'",
                        paths=("backend",)) from None
    return replicate


def _token() -> str:
    token = os.environ.get("REPLICATE_API_TOKEN", "").strip()
    if not token:
        raise UserError(f"{{backend}} replicate needs an API token in REPLICATE_API_TOKEN: make one at {TOKEN_PAGE}, "
                        "then `export REPLICATE_API_TOKEN=r8_...`", paths=("backend",))
    return token


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())[:160]
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


def _address(e: Exception) -> str:
    """Where a request that could not connect was going: the API's address (REPLICATE_BASE_URL, else
    api.replicate.com) or a file's host."""
    try:
        url = e.request.url  # type: ignore[attr-defined]
        where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    except (AttributeError, RuntimeError):
        where = os.environ.get("REPLICATE_BASE_URL") or API_URL
    base = (os.environ.get("REPLICATE_BASE_URL") or API_URL).rstrip("/")
    if base.startswith(where):
        return f"{where} (REPLICATE_BASE_URL)" if os.environ.get("REPLICATE_BASE_URL") else where
    return where


def _no_such_host(e: Exception) -> bool:
    """A name the resolver does not know (or no resolver at all): trying again will not help."""
    text = str(e).lower()
    return any(w in text for w in ("name or service not known", "name resolution", "nodename nor servname",
                                   "getaddrinfo failed", "no address associated"))


def _created(prediction: Any) -> float:
    """A listed prediction's created_at as seconds since the epoch (inf when it cannot be read)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(prediction.created_at).replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return float("inf")


def _fields_hash(inputs: dict[str, Any]) -> str:
    from ..settings import stable_hash

    return stable_hash(json.loads(json.dumps({k: v for k, v in inputs.items() if k not in FILE_KEYS},
                                             default=str)), length=32)


def _input_hash(inputs: dict[str, Any]) -> dict[str, Any]:
    """What tells a prediction's input from another's, as the listing shows it: the other fields' hash,
    and each picture's SHA-256 (a data URL's content; the listing may give a URL of its copy)."""
    files = {k: hashlib.sha256(base64.b64decode(v.partition(",")[2])).hexdigest()
             for k, v in inputs.items() if k in FILE_KEYS}
    return {"fields": _fields_hash(inputs), "files": files}


def _data_url(path: Path) -> str:
    """A picture input as the client would send an open file: a data URL (kept inside the request)."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


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
    """The model's input for a job; a picture as a data URL (what the client makes of an open file):
    the input is then all text, and its hash (journaled before the create) is what is sent."""
    u = job.units[0]
    if job.kind == "morph":
        return {"frame1": _data_url(root / u.inputs[-2]), "frame2": _data_url(root / u.inputs[-1]),
                "times_to_interpolate": job.times}
    p = u.params
    if u.kind == "caption":
        inputs: dict[str, Any] = {"image": _data_url(root / u.inputs[0]),
                                  "mode": "fast" if p["mode"] == "caption" else p["mode"]}
        if settings.interrogate.clip_model in CLIP_NAMES:
            inputs["clip_model_name"] = settings.interrogate.clip_model
        return inputs
    inputs = {"prompt": p["prompt"], "negative_prompt": p["negative_prompt"], "width": p["width"],
              "height": p["height"], "num_inference_steps": p["steps"], "guidance_scale": p["guidance"],
              "seed": p["seed"], "num_outputs": 1}
    if p["strength"]:
        inputs["image"] = _data_url(root / u.inputs[0])
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
    """.video2dream/predictions.jsonl, one JSON line per event of a unit (name, key):
    {intent, model, input, t, at}: a create is about to be sent (fsynced before the request);
    {id, kind, model, at}: the prediction it made (fsynced before the wait);
    {intent, made: false}: the create surely made nothing (refused);
    {id, used: true}: its output was committed.
    A later command collects the last prediction of a unit not yet used, and looks for one an intent
    without an id may have made. A line cut short by a kill is skipped."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".video2dream" / JOURNAL
        self._lock = threading.Lock()

    def _entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                entry = json.loads(line)
                if isinstance(entry, dict) and isinstance(entry["name"], str) and isinstance(entry["key"], str):
                    out.append(entry)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        return out

    def _state(self) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], dict[str, Any]]]:
        known: dict[tuple[str, str], str] = {}
        intents: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in self._entries():
            unit = (entry["name"], entry["key"])
            if entry.get("used"):
                if known.get(unit) == entry.get("id"):
                    del known[unit]
            elif entry.get("id"):
                known[unit] = str(entry["id"])
                intents.pop(unit, None)  # the intent's create was answered (or its prediction found)
            elif entry.get("made") is False:
                if intents.get(unit, {}).get("intent") == entry.get("intent"):
                    del intents[unit]
            elif entry.get("intent"):
                intents[unit] = entry
        return known, intents

    def read(self) -> dict[tuple[str, str], str]:
        """Each unit's prediction to collect (made, not yet used)."""
        return self._state()[0]

    def intents(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Each unit's create whose outcome no line tells: its prediction may exist."""
        return self._state()[1]

    def ids(self) -> set[str]:
        """Every prediction journaled: none of them can be another unit's."""
        return {str(e["id"]) for e in self._entries() if e.get("id")}

    def intent(self, u: Gap, ref: str, input_hash: dict[str, Any]) -> dict[str, Any]:
        entry = {"name": u.name, "key": u.key, "kind": u.kind, "intent": uuid.uuid4().hex[:16], "model": ref,
                 "input": input_hash, "t": round(time.time(), 3), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._write(json.dumps(entry, ensure_ascii=False), sync=True)
        return entry

    def nothing(self, u: Gap, intent: dict[str, Any]) -> None:
        self._write(json.dumps({"name": u.name, "key": u.key, "intent": intent["intent"], "made": False}),
                    sync=False)

    def used(self, u: Gap, prediction_id: str) -> None:
        self._write(json.dumps({"name": u.name, "key": u.key, "id": prediction_id, "used": True}), sync=False)

    def append(self, u: Gap, prediction_id: str, ref: str) -> None:
        line = json.dumps({"name": u.name, "key": u.key, "kind": u.kind, "id": prediction_id, "model": ref,
                           "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, ensure_ascii=False)
        self._write(line, sync=True)

    def _write(self, line: str, sync: bool) -> None:
        """Append a line (after a newline, if a kill cut the last one short); sync: on the disk before
        this returns (a lost `used` or `made: false` line costs a lookup at most)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as f:
                end = f.seek(0, os.SEEK_END)
                cut = end > 0 and os.pread(f.fileno(), 1, end - 1) != b"\n"
                f.write((("\n" if cut else "") + line + "\n").encode("utf-8"))
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
