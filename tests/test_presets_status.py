"""Presets as package data (a wheel has them; `--preset NAME` from anywhere, `--preset PATH.yaml`) and
`status --json` (issue 11)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, cli, make_clip, one_line_error, snapshot
from PIL import Image

from video2dream.settings import PRESETS_DIR, resolve


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s, 160x120, with sound: 3 frames at 1 fps."""
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4",
                     "testsrc2=size=160x120:rate=25:duration=3", "sine=frequency=440:duration=3",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"))


def saved(run: Path) -> dict:
    return yaml.safe_load((run / "settings.yaml").read_text(encoding="utf-8"))



# -- presets -----------------------------------------------------------------------------------------


@pytest.mark.slow  # builds and installs a wheel: heavy for the quick suite (-m "not slow"): CI runs it
def test_a_wheel_holds_every_preset_and_finds_them_installed(clip: Path, tmp_path: Path) -> None:
    """Built from a copy of the sources (no build/ of an earlier build can help), installed into a
    folder of its own, run from a third: `--preset tiny` must come from inside the wheel."""
    pytest.importorskip("setuptools")
    presets = sorted(p.name for p in PRESETS_DIR.glob("*.yaml"))
    assert "tiny.yaml" in presets and "default.yaml" in presets
    src = tmp_path / "src"
    shutil.copytree(ROOT / "video2dream", src / "video2dream",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    env.pop("PYTHONPATH", None)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src],
                   check=True, env=env, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("video2dream-*.whl"))
    inside = set(zipfile.ZipFile(wheel).namelist())
    assert {f"video2dream/presets/{name}" for name in presets} <= inside, sorted(inside)

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, env=env, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(site)
    code = "import video2dream, sys; print(video2dream.__file__); sys.argv[1:] = {!r}; " \
           "from video2dream.cli import main; main(sys.argv[1:])"
    argv = ["extract", str(clip), "-o", "run", "--preset", "tiny"]
    r = subprocess.run([sys.executable, "-c", code.format(argv)], cwd=elsewhere, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(site)), r.stdout  # the installed copy, not the checkout
    assert saved(elsewhere / "run")["generate"]["model"] == "tiny:sdxl"


def test_a_preset_name_works_from_any_directory(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("extract", clip, "-o", "run", "--preset", "tiny") == 0
    assert saved(tmp_path / "run")["generate"]["model"] == "tiny:sdxl"


def test_a_preset_can_be_a_yaml_file_and_presets_layer(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "steps.yaml").write_text("generate: {steps: 3}\n", encoding="utf-8")
    (tmp_path / "local.yml").write_text("generate: {guidance: 2.5}\n", encoding="utf-8")
    assert resolve(preset="mine/steps.yaml").generate.steps == 3  # a "/": a path
    assert resolve(preset="local.yml").generate.guidance == 2.5  # a .yml ending: a path, here
    assert resolve(preset=str(tmp_path / "mine" / "steps.yaml")).generate.steps == 3

    # Given twice, the second is laid over the first.
    assert cli("extract", clip, "-o", "run", "--preset", "tiny", "--preset", "mine/steps.yaml") == 0
    g = saved(tmp_path / "run")["generate"]
    assert (g["model"], g["steps"]) == ("tiny:sdxl", 3)
    assert cli("extract", clip, "-o", "run2", "--preset", "tiny", "--preset", "weird") == 0
    s = saved(tmp_path / "run2")
    assert (s["generate"]["model"], s["interrogate"]["num_beams"]) == ("tiny:sdxl", 1)
    # Model presets name every model setting: quickstart's `--preset tiny --preset default` is `default`.
    assert resolve(preset=["tiny", "default"]).to_dict() == resolve(preset="default").to_dict()

    # A file that is not there, or a name that is no preset: one line, nothing written.
    before = snapshot(tmp_path)
    capsys.readouterr()
    one_line_error(cli("extract", clip, "-o", "run3", "--preset", "mine/gone.yaml"), capsys.readouterr().err,
                   "preset file not found: mine/gone.yaml", "tiny")
    one_line_error(cli("extract", clip, "-o", "run3", "--preset", "tiyn"), capsys.readouterr().err,
                   "unknown preset 'tiyn'", "tiny")
    assert snapshot(tmp_path) == before


# -- status --json -----------------------------------------------------------------------------------


def status_json(capsys: pytest.CaptureFixture[str], run: Path) -> dict:
    """`status --json`: exit 0 and nothing on stdout but one JSON document."""
    capsys.readouterr()
    assert cli("status", run, "--json") == 0
    out, err = capsys.readouterr()
    assert err == "", err
    return json.loads(out)


def status_text(capsys: pytest.CaptureFixture[str], run: Path) -> str:
    capsys.readouterr()
    assert cli("status", run) == 0
    return capsys.readouterr().out


def test_status_json_of_a_fresh_extract(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert cli("extract", clip, "-o", run, "--preset", "img2img") == 0
    d = status_json(capsys, run)
    assert d["run_folder"] == str(run)
    assert d["source"] == {"path": str(clip), "duration": pytest.approx(3.0, abs=0.1), "has_audio": True,
                           "state": "present"}
    assert d["extract"] == {"state": "done", "frames": 3, "fps": 1.0, "width": 160, "height": 120,
                          "at": "seconds", "cuts": 0, "kinds": {"tick": 3}}
    assert d["interrogate"] == {"state": "not run"} and d["generate"] == {"state": "not run"}
    assert [(v["video"], v["state"]) for v in d["videos"]] == [("dream.mp4", "not run")]
    assert d["settings"] == {"generate": {"strength": 0.6, "seed_mode": "fixed"}}
    assert "the source" in d["sound"]["says"]


@pytest.mark.slow
def test_status_json_follows_a_run_a_changed_dream_and_a_deleted_video(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_torch_thread: None
) -> None:
    run = tmp_path / "run"
    assert cli("run", clip, "-o", run, "--preset", "tiny") == 0
    d = status_json(capsys, run)
    for stage in ("interrogate", "generate"):
        assert d[stage]["state"] == "current", d
        assert (d[stage]["total"], d[stage]["current"], d[stage]["stale"], d[stage]["missing"]) == (3, 3, [], [])
    assert d["interrogate"]["edited"] == []
    (video,) = d["videos"]
    assert (video["video"], video["state"], video["output"]) == ("dream.mp4", "current", str(run / "dream.mp4"))
    assert video["from"] == "dreams" and video["duration"] == pytest.approx(3.0, abs=0.1)
    assert d["settings"]["generate"]["model"] == "tiny:sdxl"

    # One dream changed: it is the one named stale, and the video is stale.
    Image.new("RGB", (64, 48), "white").save(run / "dreams" / "000002.png")
    d = status_json(capsys, run)
    assert d["generate"] | {"total": 3} == {"state": "stale", "total": 3, "current": 2,
                                              "stale": ["000002.png"], "missing": [],
                                              "command": f"video2dream generate {run}"}
    assert d["videos"][0]["state"] == "stale"
    assert "2/3 dreams current, 1 stale, 0 missing" in status_text(capsys, run)  # the same data, as text

    # A prompt edited by hand: its row is "edited", its dream stale; a deleted dream is missing.
    rows = pd.read_csv(run / "prompts.csv", dtype=str, keep_default_na=False)
    rows.loc[0, "prompt"] = "a hand-written prompt"
    rows.to_csv(run / "prompts.csv", index=False)
    (run / "dreams" / "000003.png").unlink()
    d = status_json(capsys, run)
    assert d["interrogate"]["edited"] == ["000001.png"] and d["interrogate"]["state"] == "current"
    assert (d["generate"]["stale"], d["generate"]["missing"]) == (["000001.png", "000002.png"], ["000003.png"])
    assert d["generate"]["state"] == "stale"

    # dream.mp4 deleted: not run, with the command that makes it.
    (run / "dream.mp4").unlink()
    d = status_json(capsys, run)
    assert d["videos"] == [{"video": "dream.mp4", "state": "not run", "command": f"video2dream assemble {run}"}]
    assert "assemble    not run" in status_text(capsys, run)


def test_status_json_of_a_missing_folder_is_the_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli("status", tmp_path / "nowhere", "--json")
    out, err = capsys.readouterr()
    assert out == ""
    one_line_error(code, err, "does not exist")
    assert not (tmp_path / "nowhere").exists()
