"""Each stage's summary line carries its wall time (and units per second when it made any); `run`
ends with a table of each stage's time and the total; a reporter gets them as events. Formats are
checked, never the values (they depend on the machine)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import cli, make_clip

from video2dream import pipeline, report
from video2dream.runfolder import RunFolder
from video2dream.settings import resolve

TIME = r"(\d+\.\d\d? s|\d+ s|\d+ min \d+ s|\d+ h \d\d min)"
RATE = r"\d+(\.\d+)?(e-\d+)? {unit}/s"


def timed(unit: str, rated: bool = True) -> str:
    """The end of a summary line: '(TIME, RATE unit/s)', or '(TIME)' when nothing was made."""
    return rf"\({TIME}, {RATE.format(unit=re.escape(unit))}\)$" if rated else rf"\({TIME}\)$"


def line(err: str, start: str) -> str:
    found = [x for x in err.splitlines() if x.startswith(f"video2dream: {start}")]
    assert len(found) == 1, err
    return found[0]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "clip.mp4", "testsrc2=size=64x64:rate=10:duration=2", args=("-pix_fmt", "yuv420p"))


def test_words_and_table_format() -> None:
    t = report.StageTime("generate", 151.2, 12, "dream")
    assert t.words() == "2 min 31 s, 0.08 dream/s"
    assert report.StageTime("generate", 3.0, 0, "dream").words() == "3.0 s"  # nothing made: no rate
    assert report.StageTime("assemble", 0.4, 1, "video", rated=False).words() == "0.40 s"
    assert [report.duration_words(s) for s in (0.423, 4.25, 31.4, 3599.6, 3725)] == \
        ["0.42 s", "4.2 s", "31 s", "1 h 00 min", "1 h 02 min"]
    lines = report.table_lines([report.StageTime("extract", 0.5, 2, "frame"), t], 160)
    assert lines[0].split() == ["stage", "made", "time", "rate"]
    assert re.fullmatch(r"generate +12 dream\(s\) +2 min 31 s +0\.08 dream/s", lines[2])
    assert re.fullmatch(r"total +2 min 40 s", lines[-1])
    end = lines[0].index("time") + len("time")
    assert all(re.search(TIME, x).end() == end for x in lines[1:])  # the times right-aligned under "time"


def test_extract_and_assemble_lines_carry_their_time(clip: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    assert re.search(timed("frame"), line(capsys.readouterr().err, "extract: 2 frames"))
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0  # up to date: no frames made, no rate
    assert re.search(timed("frame", rated=False), line(capsys.readouterr().err, "extract: up to date"))
    assert cli("assemble", run, "--from", "frames") == 0  # its encode time, no rate
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays clean
    assert re.search(rf"\(\d+\.\d\d s, [^;]+; took {TIME}\)$", line(err, "assemble: wrote"))


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_run_ends_with_a_table_and_reports_timing_events(clip: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    flags = ("--preset", "tiny", "--width", "64", "--height", "64", "--steps", "2")
    assert cli("run", clip, "-o", run, *flags) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert re.search(timed("frame"), line(err, "extract: 2 frames"))
    assert re.search(timed("caption"), line(err, "interrogate: 2 row(s) written"))
    assert re.search(timed("dream"), line(err, "generate: 2 dream(s) painted"))
    assert re.search(rf"; took {TIME}\)$", line(err, "assemble: wrote"))
    lines = err.splitlines()
    head = lines.index(line(err, "run: done in"))
    assert re.fullmatch(rf"video2dream: run: done in {TIME}; each stage's time \(model loading included\):",
                        lines[head])
    table = lines[head + 1:]
    assert table[0].split() == ["stage", "made", "time", "rate"]
    rows = [r.split()[0] for r in table[1:]]
    assert rows == ["extract", "interrogate", "generate", "assemble", "total"]
    for row, unit in zip(table[1:4], ("frame", "caption", "dream"), strict=True):
        assert re.fullmatch(rf"  \w+ +2 {unit}\(s\) +{TIME} +{RATE.format(unit=unit)}", row), row
    assert re.fullmatch(rf"  assemble +1 video\(s\) +{TIME}", table[4])
    assert re.fullmatch(rf"  total +{TIME}", table[5])

    # The library's caller gets the same as events: each stage's time, then the table (all up to date
    # now: nothing made, so no rates).
    events = report.CollectingReporter()
    folder = RunFolder(run)
    pipeline.do_run(folder, resolve(folder.saved_settings()), clip, reporter=events)
    timing = events.of("timing")
    assert [e.stage for e in timing] == ["extract", "interrogate", "generate", "assemble"]
    assert all(e.total == 0 and e.seconds is not None and e.seconds >= 0 for e in timing)
    (times,) = events.of("times")
    assert times.rows == [e.rows[0] for e in timing] and times.seconds is not None
    assert times.seconds >= sum(t.seconds for t in times.rows)
    assert times.text.splitlines()[-1].startswith("total")
    assert events.events[-1] is times  # the table comes last
    assert all(re.search(rf"\({TIME}\)$", m) for m in events.messages if m.startswith(("extract", "generate")))
