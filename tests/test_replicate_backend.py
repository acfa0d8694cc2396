"""--backend replicate against a local server that speaks Replicate's HTTP API (tests/fake_replicate.py),
with the real `replicate` client pointed at it (REPLICATE_BASE_URL): a whole run; a kill and a Ctrl-C
while predictions are in flight, then a rerun that collects them (the server counts: no frame is
predicted twice); a storm of 429s; a failed prediction; a content-filter refusal; a timeout; tokens,
versions and --max-predictions refused before anything is created; keys that tell remote from local."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, cli, make_clip, one_line_error, snapshot
from fake_replicate import CAPTION_REF, MORPH_REF, PAINT_REF, Server

from video2dream.backends.replicate import Journal
from video2dream.pngmeta import read_png_text
from video2dream.runfolder import RunFolder
from video2dream.settings import resolve
from video2dream.stages import generate as gen
from video2dream.stages import morph as mo
from video2dream.stages.interrogate import row_keys

NAMES = ["000001.png", "000002.png", "000003.png"]
REMOTE = ("--backend", "replicate")


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def point_client_at(server: Server, mp: pytest.MonkeyPatch):
    """The client's environment pointed at the fake server, and a fresh server state."""
    mp.setenv("REPLICATE_BASE_URL", server.url)
    mp.setenv("REPLICATE_API_TOKEN", server.fake.token)
    mp.setenv("REPLICATE_POLL_INTERVAL", "0.02")
    return server.reset()


@pytest.fixture()
def fake(server: Server, monkeypatch: pytest.MonkeyPatch):
    return point_client_at(server, monkeypatch)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s at 10 fps, 160x120: three frames at 1 fps."""
    return make_clip(tmp_path_factory.mktemp("rep") / "clip.mp4", "testsrc2=size=160x120:rate=10:duration=3",
                     args=("-pix_fmt", "yuv420p"))


@pytest.fixture(scope="module")
def extracted(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "extracted"
    assert cli("extract", clip, "-o", out, "--preset", "tiny") == 0
    return out


@pytest.fixture(scope="module")
def captioned(extracted: Path, server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prompts.csv written by `interrogate --backend replicate` (the server's captions)."""
    out = tmp_path_factory.mktemp("rep") / "captioned"
    shutil.copytree(extracted, out)
    with pytest.MonkeyPatch.context() as mp:
        point_client_at(server, mp)
        assert cli("interrogate", out, *REMOTE) == 0
    return out


@pytest.fixture(scope="module")
def dreamed(captioned: Path, server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three dreams painted by `generate --backend replicate` (solid colours: the server's)."""
    out = tmp_path_factory.mktemp("rep") / "dreamed"
    shutil.copytree(captioned, out)
    with pytest.MonkeyPatch.context() as mp:
        point_client_at(server, mp)
        assert cli("generate", out, *REMOTE) == 0
    return out


def last_error(code: int, err: str, *words: str) -> None:
    """A failure once the work has started: the news before it (what it will create), then one error line."""
    one_line_error(code, err.strip().splitlines()[-1], *words)


def copy(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(src, dest)
    return dest


def paints(fake) -> dict:
    return fake.created_for("paint")


def journal(run: Path) -> list[dict]:
    """The predictions the run folder's journal says were created (not the intents before the creates,
    nor the lines marking them used)."""
    return [e for e in journal_lines(run) if e.get("id") and not e.get("used")]


def journal_lines(run: Path) -> list[dict]:
    path = run / ".video2dream" / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_whole_run_on_replicate(fake, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert cli("run", clip, "-o", run, "--preset", "tiny", *REMOTE) == 0
    err = capsys.readouterr().err
    assert f"3 new prediction(s) of {CAPTION_REF}, up to 3 more for the dreams ({PAINT_REF})" in err
    assert err.count(f"new prediction(s) of {CAPTION_REF}") == 1  # said once, not again by interrogate
    assert (run / "dream.mp4").is_file()
    assert sorted(fake.created.values()) == [1] * 6 and len(paints(fake)) == 3  # a caption and a dream per frame
    captions = [p for p in fake.predictions.values() if p.kind == "caption"]
    assert all(p.input["image"].startswith("data:image/png;base64,") for p in captions)  # the frames, inline
    assert {p.input["mode"] for p in captions} == {"fast"}
    text = read_png_text(run / "dreams" / "000002.png")
    assert f'Model: "{PAINT_REF}"' in text["parameters"] and "Seed: 2" in text["parameters"]
    lines = journal(run)
    assert sorted((e["name"], e["kind"]) for e in lines) == sorted((n, k) for n in NAMES for k in ("caption", "paint"))
    assert Journal(run).read() == {}  # every result was handed on: none is left to collect
    assert cli("status", run) == 0
    assert "3/3 dreams current" in capsys.readouterr().out
    assert cli("run", clip, "-o", run, "--preset", "tiny", *REMOTE) == 0  # all current: nothing is sent again
    assert sum(fake.created.values()) == 6
    assert "replicate: no prediction to create" in capsys.readouterr().err


def _cli_process(*args: str | Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "video2dream", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _until_journaled(proc: subprocess.Popen, run: Path, kind: str, count: int) -> None:
    deadline = time.monotonic() + 120  # a generous bound for a loaded machine; normally a few seconds
    while sum(e["kind"] == kind for e in journal(run)) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no predictions journaled"
        time.sleep(0.05)


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_kill_in_flight_then_rerun_collects(fake, captioned: Path, tmp_path: Path) -> None:
    run = copy(captioned, tmp_path)
    fake.hold = True  # predictions stay "processing": the command is killed while it waits on them
    proc = _cli_process("generate", run, *REMOTE, "--workers", "2")
    _until_journaled(proc, run, "paint", 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(paints(fake)) == 2 and not fake.cancels
    fake.hold = False
    assert cli("generate", run, *REMOTE, "--workers", "2") == 0
    assert len(paints(fake)) == 3 and set(paints(fake).values()) == {1}  # no frame predicted twice
    assert sorted(p.name for p in (run / "dreams").iterdir()) == NAMES
    assert len({e["id"] for e in journal(run) if e["kind"] == "paint"}) == 3


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_ctrl_c_leaves_predictions_journaled(fake, extracted: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C does not cancel: what is in flight is paid for anyway; the next command collects it.
    A real SIGINT to this process, sent once the predictions are journaled (the command waits on them
    meanwhile: the server holds them)."""
    run = copy(extracted, tmp_path)
    fake.hold = True
    returned = threading.Event()

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 120
        while len(journal(run)) < 3 and time.monotonic() < deadline and not returned.is_set():
            time.sleep(0.02)
        if not returned.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    try:
        code = cli("interrogate", run, *REMOTE)
    finally:
        returned.set()
        presser.join()
    err = capsys.readouterr().err
    assert code == 130, err
    assert "interrupted; finished work is kept" in err and not fake.cancels and len(journal(run)) == 3
    fake.hold = False
    assert cli("interrogate", run, *REMOTE) == 0
    assert sorted(fake.created_for("caption").values()) == [1, 1, 1]  # collected, not made again
    assert sum("a picture of" in line for line in (run / "prompts.csv").read_text().splitlines()) == 3


def test_storm_of_429s_is_retried(fake, captioned: Path, tmp_path: Path) -> None:
    run = copy(captioned, tmp_path)
    fake.throttle = 25  # creates, polls and lookups alike; 429s and 503s
    assert cli("generate", run, *REMOTE, "--strength", "0.6") == 0  # img2img, while we are at it
    assert fake.throttled == 25
    assert sorted(paints(fake).values()) == [1, 1, 1]
    sent = [p.input for p in fake.predictions.values()]
    assert all(i["prompt_strength"] == 0.6 and i["image"].startswith("data:image/png;base64,") for i in sent)
    from PIL import Image

    with Image.open(run / "dreams" / "000001.png") as dream:  # painted at the frame's size, resized to the run's
        assert dream.size == (sent[0]["width"], sent[0]["height"]) != (160, 120)


def test_failed_prediction_is_one_line(fake, captioned: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = copy(captioned, tmp_path)
    fake.fail = lambda p: "CUDA out of memory" if p.kind == "paint" and p.input["seed"] == 2 else None
    code = cli("generate", run, *REMOTE)
    last_error(code, capsys.readouterr().err, "000002.png", "failed: CUDA out of memory")
    assert sorted(p.name for p in (run / "dreams").iterdir()) == ["000001.png", "000003.png"]  # the others kept


def test_content_filter_refusal_marks_the_frame(fake, captioned: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    run = copy(captioned, tmp_path)
    fake.fail = lambda p: ("NSFW content detected. Try running it again, or try a different prompt."
                           if p.kind == "paint" and p.input["seed"] == 2 else None)
    code = cli("generate", run, *REMOTE)
    last_error(code, capsys.readouterr().err, "content filter refused 1 frame(s) (000002.png", "refused.csv")
    assert sorted(p.name for p in (run / "dreams").iterdir()) == ["000001.png", "000003.png"]
    refused = (run / "refused.csv").read_text()
    assert "000002.png" in refused and "NSFW" in refused
    fake.fail = lambda p: None
    assert cli("generate", run, *REMOTE) == 0  # a failed prediction cannot be collected: made anew
    assert not (run / "refused.csv").exists()
    assert paints(fake)[min(k for k in paints(fake) if "|2|" in k[1])] == 2


def test_prediction_slower_than_the_timeout_is_canceled(fake, captioned: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    run = copy(captioned, tmp_path)
    fake.hold_only = lambda p: p.input.get("seed") == 3
    code = cli("generate", run, *REMOTE, "--prediction-timeout", "0.3")
    last_error(code, capsys.readouterr().err, "000003.png", "took longer than 0.3 s", "canceled")
    assert len(fake.cancels) == 1 and fake.predictions[fake.cancels[0]].status == "canceled"
    assert sorted(p.name for p in (run / "dreams").iterdir()) == ["000001.png", "000002.png"]


@pytest.mark.parametrize("token, words", [(None, "needs an API token in REPLICATE_API_TOKEN"),
                                          ("r8_wrong", "Replicate refused the token in REPLICATE_API_TOKEN (401")])
def test_token_missing_or_bad(fake, captioned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture, token: str | None, words: str) -> None:
    run = copy(captioned, tmp_path)
    if token is None:
        monkeypatch.delenv("REPLICATE_API_TOKEN")
    else:
        monkeypatch.setenv("REPLICATE_API_TOKEN", token)
    before = snapshot(run)
    code = cli("generate", run, *REMOTE)
    one_line_error(code, capsys.readouterr().err, words)
    assert snapshot(run) == before and not fake.created


def test_unknown_version_is_one_line(fake, captioned: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = copy(captioned, tmp_path)
    config = tmp_path / "remote.yaml"
    config.write_text("replicate:\n  paint_model: stability-ai/sdxl:" + "0" * 64 + "\n")
    before = snapshot(run)
    code = cli("generate", run, *REMOTE, "--config", config)
    one_line_error(code, capsys.readouterr().err, "replicate.paint_model", "is no model or version on Replicate")
    assert snapshot(run) == before and not fake.created


def test_official_model_by_name(fake, captioned: Path, tmp_path: Path) -> None:
    """OWNER/NAME without a version: the model's own predictions endpoint."""
    run = copy(captioned, tmp_path)
    config = tmp_path / "remote.yaml"
    config.write_text("replicate:\n  paint_model: stability-ai/sdxl\n")
    assert cli("generate", run, *REMOTE, "--config", config) == 0
    assert sorted(paints(fake).values()) == [1, 1, 1]
    assert read_png_text(run / "dreams" / "000001.png")["parameters"].endswith("Model: stability-ai/sdxl")
    assert fake.posts == ["/v1/models/stability-ai/sdxl/predictions"] * 3


def test_max_predictions_refuses_before_creating(fake, clip: Path, extracted: Path, captioned: Path,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fresh = tmp_path / "fresh"
    shutil.copytree(extracted, fresh)  # extracted: `run` finds its frames up to date
    code = cli("run", clip, "-o", fresh, "--preset", "tiny", *REMOTE, "--max-predictions", "5")
    last_error(code, capsys.readouterr().err, "up to 6 prediction(s)", "--max-predictions 5")
    assert not (fresh / "prompts.csv").exists()
    run = copy(captioned, tmp_path)
    before = snapshot(run)
    code = cli("generate", run, *REMOTE, "--max-predictions", "2")
    last_error(code, capsys.readouterr().err, "would create 3 prediction(s)")
    assert snapshot(run) == before and not fake.created
    assert cli("generate", run, *REMOTE, "--max-predictions", "3") == 0


def test_switching_backends_repaints(fake, captioned: Path, tmp_path: Path) -> None:
    """Remote and local results never pass for each other: their keys differ, per model version too."""
    run = copy(captioned, tmp_path)
    assert cli("generate", run, *REMOTE) == 0
    folder = RunFolder(run)
    settings = resolve(folder.saved_settings())
    assert settings.backend == "replicate"
    assert gen.plan_units(folder, settings)[0] == []  # the folder's backend: all current
    local = gen.plan_units(folder, settings, backend="local")[0]
    assert [u.name for u in local] == NAMES  # local would paint every dream again
    other = resolve(folder.saved_settings(), overrides={"replicate": {"paint_model": "stability-ai/sdxl"}})
    assert [u.name for u in gen.plan_units(folder, other)[0]] == NAMES
    remote_rows, local_rows = row_keys(folder, settings, NAMES), row_keys(folder, settings, NAMES, "local")
    assert all(remote_rows[n] != local_rows[n] for n in NAMES)


def test_without_the_client_is_one_line(fake, captioned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    run = copy(captioned, tmp_path)
    monkeypatch.setitem(sys.modules, "replicate", None)  # what `import replicate` meets when it is not installed
    before = snapshot(run)
    code = cli("generate", run, *REMOTE)
    one_line_error(code, capsys.readouterr().err, "pip install 'video2dream[replicate]'")
    assert snapshot(run) == before


def test_the_telephone_game_is_refused(fake, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A chain's steps carry keys without the backend's part: refused rather than mixed with local ones."""
    from PIL import Image

    Image.new("RGB", (64, 48), "navy").save(tmp_path / "cover.png")
    code = cli("telephone", tmp_path / "cover.png", "-o", tmp_path / "chain", "--preset", "tiny", *REMOTE)
    one_line_error(code, capsys.readouterr().err, "does not play the telephone game yet", "--backend local")
    assert not (tmp_path / "chain").exists() and not fake.created


def _colour(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def test_inbetweens_one_prediction_per_gap(fake, dreamed: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """FILM on the two dreams, one prediction per gap (an mp4 of 2^2 + 1 frames for 3 in-betweens);
    each in-between is the frame at its t; a rerun sends nothing; the keys are not the local ones."""
    run = copy(dreamed, tmp_path)
    assert cli("morph", run, *REMOTE, "--inbetweens", "3") == 0
    assert f"2 new prediction(s) of {MORPH_REF} (one per gap, for 6 in-between(s))" in capsys.readouterr().err
    sent = [p for p in fake.predictions.values() if p.kind == "morph"]
    assert len(sent) == 2 and sorted(fake.created_for("morph").values()) == [1, 1]
    assert all(p.input["times_to_interpolate"] == 2 and p.input["frame1"].startswith("data:image/png;base64,")
               for p in sent)
    names = sorted(p.name for p in (run / "morphs").iterdir())
    assert names == [f"00000{a}-00000{a + 1}_0{k}.png" for a in (1, 2) for k in (1, 2, 3)]
    a, b = _colour(run / "dreams" / "000001.png"), _colour(run / "dreams" / "000002.png")
    for k, t in ((1, 0.25), (2, 0.5), (3, 0.75)):  # FILM's frames 1..3 of 4: exactly these t
        assert abs(_colour(run / "morphs" / f"000001-000002_0{k}.png") - (a + (b - a) * t)).max() <= 4, k
    assert f'Model: "{MORPH_REF}"' in read_png_text(run / "morphs" / "000002-000003_02.png")["parameters"]
    folder = RunFolder(run)
    settings = resolve(folder.saved_settings())
    assert mo.status_data(folder, settings)["state"] == "current"
    assert cli("morph", run, *REMOTE, "--inbetweens", "3") == 0  # all current: nothing is sent again
    assert len(fake.created_for("morph")) == 2 and "0 in-between(s) painted, 6 up to date" in capsys.readouterr().err
    remote = {m.name: m.key for m in mo.plan(folder, settings)}
    local = {m.name: m.key for m in mo.plan(folder, settings, backend="local")}
    assert remote.keys() == local.keys() and all(remote[n] != local[n] for n in names)  # switching repaints
    film = "google-research/frame-interpolation"  # no version: not the default's key
    other = resolve(folder.saved_settings(), overrides={"replicate": {"morph_model": film}})
    assert len(mo.plan_units(folder, other)[0]) == 6  # another model version: made again


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_inbetweens_killed_then_rerun_never_predict_a_gap_twice(fake, dreamed: Path, tmp_path: Path) -> None:
    """One in-between a gap: FILM's midpoint (a PNG). Killed while both gaps are in flight, the rerun
    collects them by id."""
    run = copy(dreamed, tmp_path)
    fake.hold = True
    proc = _cli_process("morph", run, *REMOTE, "--inbetweens", "1", "--workers", "2")
    _until_journaled(proc, run, "morph", 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(fake.created_for("morph")) == 2 and not fake.cancels
    fake.hold = False
    assert cli("morph", run, *REMOTE, "--inbetweens", "1") == 0
    assert sorted(fake.created_for("morph").values()) == [1, 1]  # no gap predicted twice
    assert {p.input["times_to_interpolate"] for p in fake.predictions.values()} == {1}
    assert sorted(p.name for p in (run / "morphs").iterdir()) == ["000001-000002_01.png", "000002-000003_01.png"]
    a, b = _colour(run / "dreams" / "000002.png"), _colour(run / "dreams" / "000003.png")
    assert abs(_colour(run / "morphs" / "000002-000003_01.png") - (a + b) / 2).max() <= 2


def test_inbetweens_need_current_dreams_and_count_in_run(fake, clip: Path, extracted: Path, dreamed: Path,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = copy(dreamed, tmp_path)
    (run / "dreams" / "000002.png").unlink()
    before = snapshot(run)
    code = cli("morph", run, *REMOTE)
    one_line_error(code, capsys.readouterr().err, "dreams/000002.png is missing or not current", "generate")
    assert snapshot(run) == before and not fake.created
    fresh = tmp_path / "fresh"
    shutil.copytree(extracted, fresh)  # 3 captions, up to 3 dreams and 2 gaps
    code = cli("run", clip, "-o", fresh, "--preset", "tiny", *REMOTE, "--transition", "morph",
               "--max-predictions", "7")
    err = capsys.readouterr().err
    assert f"up to 2 more for the in-betweens, one per gap ({MORPH_REF})" in err
    last_error(code, err, "up to 8 prediction(s)", "--max-predictions 7")
    assert not fake.created


def test_inbetweens_unknown_model_or_failed_prediction(fake, dreamed: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    run = copy(dreamed, tmp_path)
    config = tmp_path / "film.yaml"
    config.write_text("replicate:\n  morph_model: google-research/frame-interpolation:" + "0" * 64 + "\n")
    before = snapshot(run)
    code = cli("morph", run, *REMOTE, "--inbetweens", "1", "--config", config)
    one_line_error(code, capsys.readouterr().err, "replicate.morph_model", "is no model or version on Replicate")
    assert snapshot(run) == before and not fake.created
    fake.fail = lambda p: "CUDA out of memory" if p.kind == "morph" and len(fake.created) == 2 else None
    code = cli("morph", run, *REMOTE, "--inbetweens", "1", "--workers", "1")
    last_error(code, capsys.readouterr().err, "000002-000003 failed: CUDA out of memory")
    assert sorted(p.name for p in (run / "morphs").iterdir()) == ["000001-000002_01.png"]  # the other gap kept


# -- never pay twice, really (issue 19) ---------------------------------------------------------

SLOW_WRITER = """
import os, sys, time
from pathlib import Path
import video2dream.pngmeta as pngmeta
save = pngmeta.save_png
def slow(image, path, *args, **kwargs):
    if Path(path).name == os.environ["SLOW_NAME"]:  # handed to the writer thread, never renamed into place
        Path(os.environ["SLOW_MARK"]).touch()
        time.sleep(600)
    return save(image, path, *args, **kwargs)
pngmeta.save_png = slow
from video2dream.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
@pytest.mark.parametrize("command, name, kind", [("generate", "000001.png", "paint"),
                                                 ("morph", "000001-000002_01.png", "morph")])
def test_kill_between_hand_off_and_rename_collects_again(fake, captioned: Path, dreamed: Path, tmp_path: Path,
                                                         command: str, name: str, kind: str) -> None:
    """The writer thread is slow: the command is killed once the first output was handed to it (and
    the next prediction created, by then the old code had marked the first used) but before its
    rename. The rerun collects that prediction: none is created twice."""
    run = copy(captioned if command == "generate" else dreamed, tmp_path)
    mark = tmp_path / "handed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SLOW_NAME": name, "SLOW_MARK": str(mark)}
    args = [command, run, *REMOTE, "--workers", "1"] + (["--inbetweens", "1"] if command == "morph" else [])
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _until_journaled(proc, run, kind, 2)
        deadline = time.monotonic() + 120
        while not mark.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / ("dreams" if kind == "paint" else "morphs") / name).exists()
    assert cli(*args) == 0
    assert set(fake.created_for(kind).values()) == {1}  # the handed-off prediction collected, not made again
    assert (run / ("dreams" if kind == "paint" else "morphs") / name).is_file()
    assert Journal(run).read() == {}


@pytest.mark.parametrize("knob", ["bad_gateway", "garbled_creates"])
def test_create_answered_with_an_error_after_it_was_made_is_looked_up(fake, captioned: Path, tmp_path: Path,
                                                                     knob: str) -> None:
    """A 502 (or an HTML page) after the service made the prediction: looked for among the account's
    predictions (one a page: the lookup pages through them) and collected, not created again."""
    run = copy(captioned, tmp_path)
    setattr(fake, knob, 2)
    fake.page_size = 1
    assert cli("generate", run, *REMOTE) == 0
    assert getattr(fake, knob) == 0 and sorted(paints(fake).values()) == [1, 1, 1]
    assert sorted(p.name for p in (run / "dreams").iterdir()) == NAMES
    assert len({e["id"] for e in journal(run) if e["kind"] == "paint"}) == 3


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_rerun_looks_for_the_creates_a_kill_cut_off(fake, captioned: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Killed while the creates' answers are on their way (the server made the predictions): the
    journal holds their intents without ids; the rerun finds them (the frame sent, as the listing
    gives it: a URL of the service's copy) and creates none."""
    run = copy(captioned, tmp_path)
    fake.answer_delay = 120  # after the prediction is made: the answer never arrives
    proc = _cli_process("generate", run, *REMOTE, "--workers", "3", "--strength", "0.5")
    deadline = time.monotonic() + 120
    while len(paints(fake)) < 3 or sum(bool(e.get("intent")) for e in journal_lines(run)) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not [e for e in journal(run) if e["kind"] == "paint"]  # no id was journaled: only the intents
    fake.answer_delay = 0
    assert cli("generate", run, *REMOTE, "--strength", "0.5") == 0
    assert "3 of 3 prediction(s) an earlier command may have made found" in capsys.readouterr().err
    assert sorted(paints(fake).values()) == [1, 1, 1]
    assert sorted(p.name for p in (run / "dreams").iterdir()) == NAMES


@pytest.mark.parametrize("from_folder", [False, True])
def test_no_token_writes_nothing(fake, clip: Path, captioned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture, from_folder: bool) -> None:
    """`run --backend replicate` without a token: no frames, no settings.yaml. A folder whose
    settings.yaml chose replicate says so, and how to undo it."""
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    if from_folder:
        run = copy(captioned, tmp_path)
        before = snapshot(run)
        code = cli("generate", run)
        one_line_error(code, capsys.readouterr().err, "needs an API token", "came from the run folder's "
                       "settings.yaml", "`--backend local` undoes it")
    else:
        run = tmp_path / "run"
        run.mkdir()
        (run / "notes.txt").write_text("mine")
        before = snapshot(run)
        code = cli("run", clip, "-o", run, "--preset", "tiny", *REMOTE)
        err = capsys.readouterr().err
        one_line_error(code, err, "needs an API token")
        assert "settings.yaml" not in err
    assert snapshot(run) == before and not fake.created


BAD_OUTPUTS = {
    "html": ("garbled_polls", 100, "could not be read"),
    "not a picture": ("files", lambda p: b"<html>no picture here</html>", "is not a picture"),
    "truncated": ("files", lambda p: fake_png(64, 48)[:-60], "damaged picture"),
    "too many pixels": ("files", lambda p: fake_png(4000, 4000), "far more pixels than asked"),
    "too many bytes": ("files", lambda p: fake_png(8, 8) + b"\0" * (8 << 20), "larger than"),
}


def fake_png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("case", sorted(BAD_OUTPUTS))
def test_unreadable_answers_are_one_line_and_collected(fake, captioned: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture, case: str) -> None:
    """An answer or output the tool cannot read (HTML for JSON, no picture, a cut PNG, a picture or a body
    far larger than asked for): one line, nothing written but the journal; the rerun collects."""
    run = copy(captioned, tmp_path)
    knob, value, words = BAD_OUTPUTS[case]
    setattr(fake, knob, value)
    before = snapshot(run)
    code = cli("generate", run, *REMOTE)
    last_error(code, capsys.readouterr().err, words)
    after = snapshot(run)
    assert after.pop("dreams") == b"<dir>" and not [k for k in after if k.startswith("dreams/")]  # no dream
    assert {k: v for k, v in after.items() if not k.startswith(".video2dream")} == \
        {k: v for k, v in before.items() if not k.startswith(".video2dream")}
    setattr(fake, knob, FakeReplicateDefaults[knob])
    assert cli("generate", run, *REMOTE) == 0
    assert sorted(paints(fake).values()) == [1, 1, 1]  # the first one collected, not made again


FakeReplicateDefaults = {"garbled_polls": 0, "files": None}


def test_output_at_another_size_is_resized_with_a_warning(fake, captioned: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    run = copy(captioned, tmp_path)
    fake.files = lambda p: fake_png(17, 9)
    assert cli("generate", run, *REMOTE) == 0
    err = capsys.readouterr().err
    assert err.count("output(s) came at another size than asked") == 1 and "3 output(s)" in err and "17x9 for" in err
    from PIL import Image

    with Image.open(run / "dreams" / "000001.png") as dream:
        assert dream.size != (17, 9)


def test_refused_csv_escapes_the_service_text(fake, captioned: Path, tmp_path: Path) -> None:
    from video2dream.tables import read_loose

    run = copy(captioned, tmp_path)
    text = '=HYPERLINK("http://evil.example","NSFW content detected")'
    fake.fail = lambda p: text if p.kind == "paint" and p.input["seed"] == 2 else None
    assert cli("generate", run, *REMOTE) == 1
    raw = (run / "refused.csv").read_text()
    assert "'=HYPERLINK" in raw and ",=HYPERLINK" not in raw
    assert read_loose(run / "refused.csv")["error"].tolist() == [text]


def test_unreachable_service_gives_up_within_seconds(fake, captioned: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A refused connection: one line naming the address, after a few quick tries (not a minute)."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("REPLICATE_BASE_URL", f"http://127.0.0.1:{port}")
    run = copy(captioned, tmp_path)
    before = snapshot(run)
    began = time.monotonic()
    code = cli("generate", run, *REMOTE)
    one_line_error(code, capsys.readouterr().err, f"cannot reach Replicate at http://127.0.0.1:{port} "
                   "(REPLICATE_BASE_URL)", "ConnectError")
    assert time.monotonic() - began < 30  # a bound no machine load reaches; it gave up after 62 s before
    assert snapshot(run) == before


def test_journal_line_cut_by_a_kill_does_not_swallow_the_next(tmp_path: Path) -> None:
    from video2dream.backends.replicate import Gap

    j = Journal(tmp_path)
    j.path.parent.mkdir()
    j.path.write_text('{"name": "000001.png", "key": "k1", "kind": "paint", "id": "p1"')  # no newline: cut
    j.append(Gap("000002.png", "paint", "k2"), "p2", PAINT_REF)
    assert j.read() == {("000002.png", "k2"): "p2"}


@pytest.mark.slow
def test_random_kills_with_latency_never_pay_twice(tmp_path: Path) -> None:
    """scripts/kill_replicate.py, lean: a few SIGKILLs of `run` at random (seeded) moments while creates
    take 0.4 s on the way; no unit's prediction is created twice."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import kill_replicate
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert kill_replicate.main(["--kills", "4", "--seconds", "3", "--seed", "7", "--work", str(tmp_path)]) == 0
