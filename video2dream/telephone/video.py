"""A video's telephone game: every frame goes round, one round after another, through the interrogate
and generate stages (round r reads round r-1's dreams); drift.csv and drift.png per round."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..runfolder import RunFolder
from ..settings import Settings, replace_section, stable_hash
from .inputs import load_image
from .outputs import TelephoneResult, _fmt, describe
from .steps import normalised, step_name

if TYPE_CHECKING:
    from ..backends import Backend
    from ..models.cache import ModelCache

SEED_STRIDE = 100_000  # a video's round r paints with --seed + (r - 1) * SEED_STRIDE as its base seed
ROUND_COLUMNS = ["round", "folder", "clip_to_frames", "clip_to_previous", "caption_to_previous",
                 "captions_repeated"]


def round_prompts(r: int) -> str:
    return "prompts.csv" if r == 1 else f"prompts_r{r:02d}.csv"


class RoundView(RunFolder):
    """Round r of a video's telephone game, seen by the interrogate and generate stages as a run
    folder whose 'frames' are round r-1's dreams (frames/ for round 1) and whose prompts.csv and
    dreams/ are the round's own. Its extract key also names the round's source pictures, so the
    stages redo a round whose source changed. Round 1 is the run folder itself."""

    def __init__(self, run: RunFolder, r: int, source_key: str | None) -> None:
        from ..stages.assemble import round_folder

        super().__init__(run.root)
        self.round = r
        self._source = "frames" if r == 1 else round_folder(r - 1)
        self._dreams = round_folder(r)
        self._source_key = source_key

    frames_dir = property(lambda self: self.root / self._source)
    prompts_csv = property(lambda self: self.root / round_prompts(self.round))
    dreams_dir = property(lambda self: self.root / self._dreams)

    def read_record(self, name: str) -> dict[str, Any] | None:
        data = super().read_record(name)
        if name == "extract" and data and self.round > 1:
            data = {**data, "key": stable_hash(data.get("key"), self.round, self._source_key)}
        return data


def _round_source_key(view: RoundView) -> str:
    """What the round's dreams are: the keys their PNGs carry (equal keys, equal pictures)."""
    from ..pngmeta import read_png_text
    from ..stages.engine import KEY_CHUNK
    from ..tables import read_frames

    names = read_frames(view.frames_csv)["filename"].tolist()
    return stable_hash([read_png_text(view.dreams_dir / n).get(KEY_CHUNK) for n in names])


def play_video(video: Path, run: RunFolder, settings: Settings, models: ModelCache, force: bool = False,
               on_ready: Callable[[], None] | None = None, backend: str | Backend = "local") -> TelephoneResult:
    from ..stages.assemble import assemble_grid, round_folder
    from ..stages.extract import extract
    from ..stages.generate import generate
    from ..stages.interrogate import interrogate
    from ..tables import read_frames

    t, g = settings.telephone, settings.generate
    if run.root.is_dir() and not run.frames_csv.is_file() and (run.root / step_name(0)).is_file():
        raise UserError(f"{run.root} holds an image's telephone chain; give another -o folder for a video")
    _check_not_main_job(run)
    if force or not run.prompts_csv.is_file():
        _load_models(settings, models, backend)
    extract(run, video, settings, force=force, on_ready=on_ready)
    run.write_record(GAME_RECORD, {"video": str(Path(video).resolve())})  # before round 1 writes
    result = TelephoneResult("video", run.root)
    names = read_frames(run.frames_csv)["filename"].tolist()
    history: dict[str, list[str]] = {n: [] for n in names}  # captions of each frame, round by round
    source_key = None
    for r in range(1, t.steps + 1):
        view = RoundView(run, r, source_key)
        rs = replace_section(settings, "generate", seed=g.seed + (r - 1) * SEED_STRIDE)
        done = interrogate(view, rs, force=force, models=models, backend=backend)
        captions = _captions(view)
        if t.stop_at_fixed_point and r > 1 and all(captions[n] in history[n] for n in names):
            result.stopped_round = r
            # The prompts were written; their dreams would repeat earlier ones: leave them out.
            break
        for n in names:
            history[n].append(captions[n])
        painted = generate(view, rs, force=force, models=models, backend=backend)
        if done.done or painted.painted:
            result.rounds_painted += 1
        source_key = _round_source_key(view)
        result.rounds = r
    folders = ["frames"] + [round_folder(r) for r in range(1, result.rounds + 1)]
    _video_drift(run, names, folders, history, settings, models)
    result.grid = assemble_grid(run, settings, force=force, rounds=result.rounds).output
    return result


GAME_RECORD = "telephone-video"  # the folder is a video's telephone game (its round 1 is prompts.csv, dreams/)


def _check_not_main_job(run: RunFolder) -> None:
    """Round 1 of the game is the folder's prompts.csv and dreams/, captioned in the telephone's mode:
    on the folder of a `run` (or interrogate/generate) it would rewrite every row not edited by hand
    and repaint every dream. Refused: that work is the user's, and no separate settings would keep
    the game off those same files."""
    if run.read_record(GAME_RECORD) is not None or (run.root / "drift.csv").is_file():  # drift.csv: older games
        return
    work = [name for name, there in (("prompts.csv", run.prompts_csv.is_file()),
                                     ("dreams/", run.dreams_dir.is_dir() and any(run.dreams_dir.iterdir())))
            if there]
    if work:
        raise UserError(f"{run.root} holds the work of `video2dream run` ({', '.join(work)}), which the telephone "
                        f"game would caption and paint over; give it a fresh -o folder, e.g. "
                        f"-o {run.root.parent / (run.root.name + '-telephone')}")


def _load_models(settings: Settings, models: ModelCache, backend: str | Backend) -> None:
    """A first game (nothing captioned yet) loads its models before extract writes the frames and
    saves the settings: one that cannot load (offline, a bad name) leaves the folder as it was."""
    from ..backends import backend_for

    runner = backend_for(backend, models)
    runner.load("caption", settings)
    runner.load("paint", settings)
    models.clip(settings)


def _captions(view: RoundView) -> dict[str, str]:
    from ..stages.interrogate import read_prompts

    df = read_prompts(view)
    return {row.filename: normalised(str(row.caption)) for row in df.itertuples(index=False)}


def _video_drift(run: RunFolder, names: list[str], folders: list[str], history: dict[str, list[str]],
                 settings: Settings, models: ModelCache) -> None:
    """drift.csv and drift.png of a video's rounds: means over the frames."""
    import pandas as pd
    import torch

    from ..strip import drift_plot
    from ..tables import write_csv

    clip = models.clip(settings)
    feats = []
    for folder in folders:
        per = []
        for start in range(0, len(names), 16):
            batch = [load_image(run.root / folder / n) for n in names[start:start + 16]]
            per.append(clip.image_features(batch).cpu())
        feats.append(torch.cat(per))
    # history[n][r - 1]: the caption of round r-1's picture (r = 1: the frame's own).
    rounds_captioned = min(len(h) for h in history.values()) if history else 0
    texts = [clip.text_features([history[n][k] for n in names]).cpu() for k in range(rounds_captioned)]
    rows = []
    for r, folder in enumerate(folders):
        to_frames = float((feats[r] * feats[0]).sum(-1).mean())
        to_prev = float((feats[r] * feats[r - 1]).sum(-1).mean()) if r else None
        cap = float((texts[r] * texts[r - 1]).sum(-1).mean()) if 0 < r < rounds_captioned else None
        same = (sum(1 for n in names if history[n][r] in history[n][:r]) if 0 < r < rounds_captioned else None)
        rows.append({"round": r, "folder": folder, "clip_to_frames": _fmt(to_frames), "clip_to_previous": _fmt(to_prev),
                     "caption_to_previous": _fmt(cap), "captions_repeated": "" if same is None else same,
                     "_v": (to_frames, to_prev, cap)})
    write_csv(run.root / "drift.csv", pd.DataFrame([{k: v for k, v in row.items() if k != "_v"} for row in rows],
                                                   columns=ROUND_COLUMNS))
    name = Path((run.read_record("source") or {}).get("path", run.root.name)).name
    drift_plot([row["round"] for row in rows],
               {"dreams vs the frames (mean)": [row["_v"][0] for row in rows],
                "dreams vs the previous round (mean)": [row["_v"][1] for row in rows],
                "captions vs the previous round's (mean)": [row["_v"][2] for row in rows]},
               run.root / "drift.png", "round (0: the extracted frames)",
               f"{name}: how far the telephone rounds drift", describe(settings))
