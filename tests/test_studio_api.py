"""The review page's API (video2dream studio), hostile requests included. No models: a run folder
made by `extract` with hand-written prompts.csv and copies of the frames as dreams."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from tests.conftest import cli, make_clip, one_line_error  # noqa: E402
from video2dream.runfolder import RunFolder  # noqa: E402
from video2dream.studio.app import create_app  # noqa: E402

PROMPTS = ("filename,prompt,time,negative_prompt\n"
           "000001.png,\"a cat, on a mat\",0.000000,\n"
           "000002.png,a dog,1.000000,blurry\n"
           "000003.png,a bird,2.000000,\n")


@pytest.fixture(scope="module")
def made_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("studio")
    clip = make_clip(base / "clip.mp4", "testsrc2=size=96x64:rate=10:duration=3",
                     "sine=frequency=440:sample_rate=8000:duration=3",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"))
    run = base / "run"
    assert cli("extract", clip, "-o", run) == 0
    (run / "prompts.csv").write_text(PROMPTS, encoding="utf-8")
    shutil.copytree(run / "frames", run / "dreams")
    return run


@pytest.fixture
def run(made_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(made_run, copy, symlinks=True)
    return copy


@pytest.fixture
def client(run: Path) -> TestClient:
    return TestClient(create_app(run), base_url="http://127.0.0.1")


def test_keyframes_list_and_detail(client: TestClient, run: Path) -> None:
    ks = client.get("/api/keyframes").json()["keyframes"]
    assert [k["name"] for k in ks] == ["000001.png", "000002.png", "000003.png"]
    assert [k["time"] for k in ks] == [0.0, 1.0, 2.0]
    assert ks[1]["prompt"] == "a dog" and ks[1]["negative_prompt"] == "blurry"
    assert ks[0]["seed"] == 1 and ks[2]["seed"] == 3  # --seed 0 plus the frame number
    assert all(k["state"] == "stale" and k["row_state"] == "edited" for k in ks)  # dreams carry no key
    d = client.get("/api/keyframes/000002.png").json()
    assert d["version"] == ks[1]["version"] and d["parameters"] == {}
    assert client.get("/api/keyframes/000009.png").status_code == 404
    assert client.get("/api/keyframes/..%2fsettings.yaml").status_code == 404
    (run / "dreams" / "000003.png").unlink()
    assert client.get("/api/keyframes").json()["keyframes"][2]["state"] == "missing"


def test_run_status_and_videos(client: TestClient) -> None:
    d = client.get("/api/run").json()
    assert d["status"]["extract"]["frames"] == 3 and d["videos"] == [] and d["held_by"] is None
    assert d["jobs"] == ["repaint", "recaption", "inbetweens", "assemble", "variants"] and d["chain"] is False
    assert client.get("/api/chain").json() == {"chain": None}


def test_index_and_static(client: TestClient) -> None:
    assert "video2dream studio" in client.get("/").text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../cli.py").status_code == 404


def test_files_only_the_folders_own(client: TestClient, run: Path) -> None:
    assert client.get("/api/files/frames/000001.png").content == (run / "frames" / "000001.png").read_bytes()
    (run / "notes.txt").write_text("private")
    (run.parent / "secret.png").write_bytes(b"x")
    for path in ("settings.yaml", "prompts.csv", "notes.txt", "frames.csv", ".video2dream/extract.json",
                 "frames/../settings.yaml", "..%2fsecret.png", "frames%2f..%2f..%2fsecret.png",
                 "%2e%2e/secret.png", "frames/%2e%2e/%2e%2e/secret.png", "%252e%252e%252fsecret.png",
                 "frames/000001.png%00.txt", "frames//000001.png", "/etc/passwd", "frames/1.png",
                 "dreams/000001.png/", "frames\\000001.png"):
        r = client.get(f"/api/files/{path}")
        assert r.status_code == 404, path
        assert r.content != b"private" and r.content != b"x"


def test_symlinks_refused(client: TestClient, run: Path) -> None:
    (run.parent / "outside.png").write_bytes((run / "frames" / "000001.png").read_bytes())
    (run / "dreams" / "000002.png").unlink()
    os.symlink(run.parent / "outside.png", run / "dreams" / "000002.png")
    os.symlink(run.parent / "outside.png", run / "dream.mp4")
    shutil.rmtree(run / "dreams_r02", ignore_errors=True)
    os.symlink(run / "frames", run / "dreams_r02")
    for path in ("dreams/000002.png", "dream.mp4", "dreams_r02/000001.png"):
        assert client.get(f"/api/files/{path}").status_code == 404, path
        assert client.get(f"/api/thumbs/{path}").status_code == 404, path
    assert client.get("/api/run").json()["videos"] == []


def test_thumbnails_cached_under_state_folder(client: TestClient, run: Path) -> None:
    before = {p for p in run.rglob("*") if ".video2dream" not in p.parts}
    r = client.get("/api/thumbs/dreams/000001.png")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    made = list((run / ".video2dream" / "thumbs" / "dreams").glob("000001-*.png"))
    assert len(made) == 1
    assert {p for p in run.rglob("*") if ".video2dream" not in p.parts} == before  # nothing next to the user's
    assert client.get("/api/thumbs/dreams/000001.png").content == r.content
    shutil.copy(run / "frames" / "000002.png", run / "dreams" / "000001.png")  # repainted: a new thumbnail
    os.utime(run / "dreams" / "000001.png", ns=(1, 10**18))
    client.get("/api/thumbs/dreams/000001.png")
    assert len(list((run / ".video2dream" / "thumbs" / "dreams").glob("000001-*.png"))) == 1
    assert client.get("/api/thumbs/dream.mp4").status_code == 404


def test_waveform_computed_once(client: TestClient, run: Path) -> None:
    w = client.get("/api/waveform").json()
    assert 2.9 < w["duration"] < 3.2 and len(w["peaks"]) == 2000 and max(w["peaks"]) > 0.1
    cache = run / ".video2dream" / "thumbs" / "waveform.json"
    stamp = cache.stat().st_mtime_ns
    assert client.get("/api/waveform").json()["peaks"] == w["peaks"] and cache.stat().st_mtime_ns == stamp


def test_row_edit_is_a_hand_edit(client: TestClient, run: Path) -> None:
    v = client.get("/api/keyframes/000002.png").json()["version"]
    r = client.put("/api/keyframes/000002.png", json={"prompt": "a wolf, at night", "version": v})
    assert r.status_code == 200, r.text
    assert (run / "prompts.csv").read_text() == PROMPTS.replace("a dog", '"a wolf, at night"')
    r = client.put("/api/keyframes/000002.png", json={"negative_prompt": "=1+1", "version": r.json()["version"]})
    assert r.status_code == 200
    assert "'=1+1" in (run / "prompts.csv").read_text()  # escaped for spreadsheets, as the stages write
    assert client.get("/api/keyframes/000002.png").json()["negative_prompt"] == "=1+1"


def test_concurrent_edit_second_tab_told(client: TestClient, run: Path) -> None:
    v = client.get("/api/keyframes/000001.png").json()["version"]
    assert client.put("/api/keyframes/000001.png", json={"prompt": "first tab", "version": v}).status_code == 200
    r = client.put("/api/keyframes/000001.png", json={"prompt": "second tab", "version": v})
    assert r.status_code == 409 and "changed since this page read it" in r.json()["error"]
    assert "first tab" in (run / "prompts.csv").read_text() and "second tab" not in (run / "prompts.csv").read_text()
    # an editor's change counts too
    v = client.get("/api/keyframes/000003.png").json()["version"]
    (run / "prompts.csv").write_text((run / "prompts.csv").read_text().replace("a bird", "an owl"))
    assert client.put("/api/keyframes/000003.png", json={"prompt": "x", "version": v}).status_code == 409


@pytest.mark.parametrize("body, words", [
    ({"prompt": "", "version": "v"}, "empty"),
    ({"prompt": "a\x00b", "version": "v"}, "NUL"),
    ({"prompt": 5, "version": "v"}, "text"),
    ({"prompt": "x" * 20001, "version": "v"}, "20000"),
    ({"prompt": "ok"}, "version"),
    ({"prompt": "ok", "version": "v", "filename": "../x"}, "unknown field"),
])
def test_bad_edits_change_nothing(client: TestClient, run: Path, body: dict, words: str) -> None:
    before = (run / "prompts.csv").read_bytes()
    r = client.put("/api/keyframes/000001.png", json=body)
    assert r.status_code == 400 and words in r.json()["error"], r.text
    assert (run / "prompts.csv").read_bytes() == before


def test_writes_need_json(client: TestClient, run: Path) -> None:
    before = (run / "prompts.csv").read_bytes()
    r = client.put("/api/keyframes/000001.png", content=b"prompt=x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415  # a form post from another web site cannot write
    assert client.post("/api/jobs", data={"kind": "assemble"}).status_code == 415
    assert client.put("/api/keyframes/000001.png", content=b"{bad", headers={"Content-Type": "application/json"}
                      ).status_code == 400
    assert (run / "prompts.csv").read_bytes() == before


def test_cli_lock_refuses_writes(client: TestClient, run: Path) -> None:
    before = (run / "prompts.csv").read_bytes()
    v = client.get("/api/keyframes/000001.png").json()["version"]
    with RunFolder(run).lock():  # a CLI command holds the folder
        held = client.get("/api/run").json()["held_by"]
        assert held["pid"] == os.getpid()
        r = client.put("/api/keyframes/000001.png", json={"prompt": "x", "version": v})
        assert r.status_code == 423 and "in use by a video2dream command" in r.json()["error"]
        r = client.post("/api/jobs", json={"kind": "assemble"})
        assert r.status_code == 423 and "nothing was saved" in r.json()["error"]
    assert (run / "prompts.csv").read_bytes() == before
    assert client.get("/api/run").json()["held_by"] is None


@pytest.mark.parametrize("body, words", [
    ({"kind": "telephone"}, "unknown job"),
    ({"kind": "run"}, "unknown job"),
    ({"kind": ["assemble"]}, "unknown job"),
    ({"kind": "assemble", "names": ["000001.png"]}, "takes no names"),
    ({"kind": "repaint", "names": ["../../etc/passwd"]}, "not a keyframe"),
    ({"kind": "repaint", "names": "000001.png"}, "list"),
    ({"kind": "repaint", "command": "rm -rf /"}, "unknown field"),
    ({"kind": "assemble", "settings": {"assemble": {"crf": 99}}}, "assemble.crf"),
    ({"kind": "repaint", "settings": {"generate": {"steps": "many"}}}, "generate.steps"),
    ({"kind": "repaint", "settings": {"nonsense": {"x": 1}}}, "nonsense"),
    ({"kind": "repaint", "settings": "steps=3"}, "settings"),
    ({"kind": "variants", "names": ["000001.png"]}, "count"),
    ({"kind": "variants", "names": ["000001.png"], "count": 99}, "count"),
    ({"kind": "variants", "count": 2}, "names of the keyframes"),
    ({"kind": "repaint", "count": 2}, "takes no count"),
])
def test_bad_jobs_refused(client: TestClient, run: Path, body: dict, words: str) -> None:
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "thumbs" not in p.parts}
    r = client.post("/api/jobs", json=body)
    assert r.status_code == 400 and words in r.json()["error"], r.text
    assert "\n" not in r.json()["error"]
    assert client.get("/api/job").json() == {"job": None, "busy": False}
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "thumbs" not in p.parts} == before


def test_recaption_asks_before_replacing_a_hand_edit(client: TestClient) -> None:
    r = client.post("/api/jobs", json={"kind": "recaption", "names": ["000002.png"]})
    assert r.status_code == 409 and r.json()["confirm"] == ["000002.png"]
    assert client.get("/api/job").json()["job"] is None


def events(client: TestClient) -> list[dict]:
    import json

    out = []
    with client.stream("GET", "/api/events?until_idle=1") as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def test_assemble_job_with_progress(client: TestClient, run: Path) -> None:
    r = client.post("/api/jobs", json={"kind": "assemble"})
    assert r.status_code == 202, r.text
    again = client.post("/api/jobs", json={"kind": "assemble"})
    assert again.status_code in (202, 409)  # 409 while the first runs (it may already be done)
    ev = events(client)
    kinds = [e["type"] for e in ev]
    assert kinds[0] == "start" and "progress" in kinds and ev[-1]["type"] in ("end", "lock")
    end = [e for e in ev if e["type"] == "end"]
    assert end[0]["state"] == "done", end
    assert (run / "dream.mp4").is_file()
    assert client.get("/api/run").json()["videos"] == ["dream.mp4"]
    assert client.get("/api/files/dream.mp4", headers={"Range": "bytes=0-99"}).status_code == 206


def test_cancel_stops_after_the_unit_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's cancel is Ctrl-C at the reporter's unit-done seam: the engine reports a unit once it
    is written, the page's reporter raises there; what was made is whole, and a later run makes the rest."""
    import threading

    from PIL import Image

    from tests.test_engine_new_stage import STAGE, UPSCALE, UpscaleParams, Upscaler
    from video2dream import report
    from video2dream.settings import resolve
    from video2dream.stages.engine import Engine, is_current
    from video2dream.studio import library
    from video2dream.units import KINDS, Unit

    monkeypatch.setitem(KINDS, "upscale", UPSCALE)
    run = RunFolder(tmp_path / "run")
    run.frames_dir.mkdir(parents=True)
    names = [f"{k:06d}.png" for k in range(1, 5)]
    for k, n in enumerate(names):
        Image.new("RGB", (8, 6), (40 * k, 100, 200)).save(run.frames_dir / n)
    units = [Unit(n, "upscale", (f"frames/{n}",), UpscaleParams(2).to_dict(), f"key-{n}") for n in names]
    events: list[dict] = []
    cancel = threading.Event()
    cancel.set()  # canceled before the first unit is done: that one is still written
    settings = resolve(preset="tiny")
    with report.using(library.PageReporter(events.append, cancel)), pytest.raises(library.Canceled):
        Engine(run, settings, Upscaler()).run_units(STAGE, units)
    done = [e for e in events if e["type"] == "progress" and e.get("name")]
    assert [e["name"] for e in done] == ["000001.png"] and done[0]["n"] == 1 and done[0]["total"] == 4
    assert events[-1]["type"] == "finished" and events[-1]["done"] == 1 and events[-1]["not_made"] == 3
    made = sorted(p.name for p in (run.root / "upscaled").iterdir())
    assert "000001.png" in made and all(is_current(run.root / "upscaled" / n, f"key-{n}") for n in made)
    assert not list(run.root.rglob("*.tmp*"))
    rest = [u for u in units if not is_current(run.root / "upscaled" / u.name, u.key)]
    with report.using(report.CollectingReporter()):
        Engine(run, settings, Upscaler()).run_units(STAGE, rest)
    assert sorted(p.name for p in (run.root / "upscaled").iterdir()) == names
    with pytest.raises(library.UserError):
        library.run_job("shell", run, settings, None, library.PageReporter(events.append))


def test_repaint_of_unknown_rows_refused(run: Path) -> None:
    """The library's only= (the page's repaint or re-caption of chosen rows) names frames of the run."""
    from video2dream import pipeline
    from video2dream.errors import UserError
    from video2dream.settings import resolve

    before = (run / "prompts.csv").read_bytes()
    for do in (pipeline.do_generate, pipeline.do_interrogate):
        with pytest.raises(UserError, match="not a frame"):
            do(RunFolder(run), resolve(RunFolder(run).saved_settings()), only=["000009.png"])
    assert (run / "prompts.csv").read_bytes() == before


def candidates(run: Path, name: str, count: int) -> list[int]:
    """count candidates of name in variants/, as `generate --variants` leaves them (their keys the
    plan's with each candidate's seed): the copies of the frame, each tinted, with its seed."""
    from PIL import Image

    from video2dream.pngmeta import save_png
    from video2dream.seeds import variant_seed
    from video2dream.settings import resolve
    from video2dream.stages import generate
    from video2dream.stages.engine import KEY_CHUNK

    r = RunFolder(run)
    settings = resolve(r.saved_settings())
    base = next(j for j in generate.plan(r, settings)[0] if j.name == name).seed
    (run / "variants").mkdir(exist_ok=True)
    seeds = []
    for k in range(1, count + 1):
        seed = variant_seed(base, k)
        job = next(j for j in generate.plan(r, settings, seeds={name: seed})[0] if j.name == name)
        image = Image.open(run / "frames" / name).convert("RGB").point(lambda v, k=k: (v + 60 * k) % 256)
        save_png(image, run / "variants" / f"{name[:-4]}_{k:02d}.png", f"{job.prompt}\nSteps: 2, Seed: {seed}",
                 {KEY_CHUNK: job.key})
        seeds.append(seed)
    return seeds


def test_pick_a_candidate(client: TestClient, run: Path) -> None:
    seeds = candidates(run, "000002.png", 2)
    d = client.get("/api/keyframes/000002.png").json()
    assert [(c["number"], c["file"], c["seed"]) for c in d["candidates"]] == [
        (1, "variants/000002_01.png", seeds[0]), (2, "variants/000002_02.png", seeds[1])]
    assert client.get("/api/thumbs/variants/000002_02.png").status_code == 200
    picked = (run / "variants" / "000002_02.png").read_bytes()
    r = client.post("/api/keyframes/000002.png/pick", json={"number": 2})
    assert r.status_code == 200, r.text
    assert (run / "dreams" / "000002.png").read_bytes() == picked  # moved, not painted
    assert r.json()["seed"] == seeds[1] and r.json()["dream_state"] == "current"
    assert [c["number"] for c in r.json()["candidates"]] == [1]
    assert f"000002.png,a dog,1.000000,blurry,{seeds[1]}" in (run / "prompts.csv").read_text()
    assert client.get("/api/keyframes").json()["keyframes"][1]["dream_state"] == "current"


@pytest.mark.parametrize("name, body, status, words", [
    ("000002.png", {"number": 3}, 400, "no candidate 3"),
    ("000002.png", {"number": 0}, 400, "number"),
    ("000002.png", {"number": "1"}, 400, "number"),
    ("000002.png", {"number": True}, 400, "number"),
    ("000002.png", {"number": 10**12}, 400, "number"),
    ("000002.png", {}, 400, "number"),
    ("000002.png", {"number": 1, "seed": 5}, 400, "unknown field"),
    ("000009.png", {"number": 1}, 400, "no frame"),
    ("settings.yaml", {"number": 1}, 404, "not a keyframe"),
    ("..%2fsettings.yaml", {"number": 1}, 404, ""),  # no route: not JSON
    ("000003.png", {"number": 1}, 400, "no candidate 1"),  # a frame without candidates
])
def test_bad_picks_change_nothing(client: TestClient, run: Path, name: str, body: dict, status: int,
                                  words: str) -> None:
    candidates(run, "000002.png", 2)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "thumbs" not in p.parts}
    r = client.post(f"/api/keyframes/{name}/pick", json=body)
    assert r.status_code == status, r.text
    if words:
        assert words in r.json()["error"] and "\n" not in r.json()["error"], r.text
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "thumbs" not in p.parts} == before


def test_pick_refuses_a_candidate_of_other_words(client: TestClient, run: Path) -> None:
    candidates(run, "000002.png", 1)
    v = client.get("/api/keyframes/000002.png").json()["version"]
    assert client.put("/api/keyframes/000002.png", json={"prompt": "a wolf", "version": v}).status_code == 200
    before = (run / "prompts.csv").read_bytes()
    r = client.post("/api/keyframes/000002.png/pick", json={"number": 1})
    assert r.status_code == 400 and "other words or settings" in r.json()["error"]
    assert (run / "prompts.csv").read_bytes() == before and (run / "variants" / "000002_01.png").is_file()


def test_token_beyond_loopback(run: Path) -> None:
    c = TestClient(create_app(run, token="s3cret-token", loopback=False), base_url="http://192.0.2.7")
    for path in ("/", "/api/keyframes", "/api/files/frames/000001.png", "/api/events?until_idle=1"):
        assert c.get(path).status_code == 403, path
    assert c.get("/api/keyframes?token=wrong").status_code == 403
    c.cookies.set("video2dream_token", "wrong")
    assert c.get("/api/keyframes").status_code == 403
    c.cookies.clear()
    v = c.put("/api/keyframes/000001.png?token=nope", json={"prompt": "x", "version": "v"})
    assert v.status_code == 403
    r = c.get("/?token=s3cret-token")
    assert r.status_code == 200 and "HttpOnly" in r.headers["set-cookie"]
    assert c.get("/api/keyframes").status_code == 200  # the cookie from now on


def test_loopback_refuses_other_hosts(run: Path) -> None:
    """DNS rebinding: a page of another site resolved to 127.0.0.1 sends its own Host."""
    c = TestClient(create_app(run), base_url="http://evil.example")
    assert c.get("/api/keyframes").status_code == 400


def test_cli_without_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, run: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    code = cli("studio", run)
    one_line_error(code, capsys.readouterr().err, "pip install 'video2dream[studio]'")


def test_cli_bad_port_and_folder(capsys: pytest.CaptureFixture, tmp_path: Path, run: Path) -> None:
    one_line_error(cli("studio", run, "--port", "70000"), capsys.readouterr().err, "--port")
    one_line_error(cli("studio", tmp_path / "nope"), capsys.readouterr().err, "does not exist")


def test_chain_view(client: TestClient, run: Path) -> None:
    shutil.copy(run / "frames" / "000001.png", run / "chain_strip.png")
    shutil.copy(run / "frames" / "000001.png", run / "step_001.png")
    (run / "chain.csv").write_text("step,image,caption,prompt,seed\n0,step_000.png,,,\n1,step_001.png,a cat,a cat,1\n"
                                   "2,../../etc/passwd,x,x,2\n")
    d = client.get("/api/chain").json()["chain"]
    assert [s["image"] for s in d["steps"]] == ["step_000.png", "step_001.png"]  # never a path outside
    assert d["steps"][1]["caption"] == "a cat" and d["strip"] is True and d["drift"] is False
    assert client.get("/api/run").json()["chain"] is True
    assert client.get("/api/files/chain_strip.png").status_code == 200
    assert client.get("/api/files/step_001.png").status_code == 200
