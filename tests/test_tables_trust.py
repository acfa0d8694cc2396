"""What a run folder's tables may not do: name files outside it, run formulas in a spreadsheet, lose
hand edits made during a run or after the frames were extracted again, or be refused for using `;`."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_clip, snapshot

from video2dream.backends import Caption
from video2dream.cli import main
from video2dream.errors import UserError
from video2dream.runfolder import RunFolder
from video2dream.settings import resolve
from video2dream.stages import interrogate as interrogate_stage
from video2dream.stages.assemble import concat_script
from video2dream.stages.generate import plan
from video2dream.stages.interrogate import (
    orphans_path,
    place_rows,
    read_prompts,
    row_keys,
    text_hash,
)
from video2dream.tables import PROMPTS_COLUMNS, escape_cell, read_csv, read_frames, unescape_cell, write_csv

FRAMES = 4  # a 4 s clip at 1 fps


# -- helpers -------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str] | None, *args: str | Path) -> tuple[int, str]:
    """main(args) -> (exit code, stderr); stderr is captured only when capsys is given."""
    if capsys is not None:
        capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err if capsys is not None else ""


def ok(capsys: pytest.CaptureFixture[str] | None, *args: str | Path) -> str:
    code, err = cli(capsys, *args)
    assert code == 0, err
    return err


def one_line_error(code: int, err: str) -> str:
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("video2dream: error:"), err
    return lines[0]


def csv_text(header: list[str], rows: list[list[str]], delimiter: str = ",") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def prompts_rows(run: RunFolder, texts: dict[str, str]) -> pd.DataFrame:
    """A prompts.csv the tool could have written (current rows) with these prompts."""
    frames = read_frames(run.frames_csv)
    names = frames["filename"].tolist()
    keys = row_keys(run, resolve(run.saved_settings()), names)
    rows = [{"filename": n, "prompt": texts[n], "time": f"{t:.6f}", "caption": texts[n], "negative_prompt": "",
             "settings_key": keys[n], "text_hash": text_hash(texts[n], "")}
            for n, t in zip(names, frames["time"], strict=True)]
    return pd.DataFrame(rows, columns=PROMPTS_COLUMNS)


def raw(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("trust-clip")
    return make_clip(d / "clip.mp4", "testsrc2=size=160x120:rate=25:duration=4",
                     "sine=frequency=440:sample_rate=44100:duration=4",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"))


@pytest.fixture(scope="module")
def extracted(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip's frames (ffmpeg only, no models), with the tiny preset's settings saved."""
    run = tmp_path_factory.mktemp("trust-extracted") / "run"
    ok(None, "extract", clip, "-o", run, "--preset", "tiny")
    return run


@pytest.fixture
def run(extracted: Path, tmp_path: Path) -> RunFolder:
    return RunFolder(shutil.copytree(extracted, tmp_path / "run"))


# -- 1. names from a table are frame names, nothing else -----------------------------------------

BAD_NAMES = {
    "absolute": "/etc/passwd",
    "parent": "../../escape.png",
    "through frames": "frames/../../escape.png",
    "a folder": "sub/000002.png",
    "NUL": "000002.png\x00.txt",
    "newline": "000002.png\nfile '/etc/passwd'",
    "no digits": "frame.png",
    "too short": "02.png",
    "other digits": "٠٠٠٠٠٢.png",  # Arabic-Indic digits: not ours
    "spaces": " 000002.png",
    "other suffix": "000002.jpg",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
@pytest.mark.parametrize("table", ["frames.csv", "prompts.csv"])
def test_a_name_that_is_not_a_frame_name_is_refused_naming_the_row(tmp_path: Path, table: str, name: str) -> None:
    path = tmp_path / table
    header = ["filename", "time"] if table == "frames.csv" else ["filename", "prompt"]
    path.write_text(csv_text(header, [["000001.png", "0"], [name, "1"]]), encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_csv(path, header, "fix it")
    message = str(e.value)
    assert "\n" not in message and "\x00" not in message  # one line, the name shown escaped
    assert str(path) in message and "row 3" in message and repr(name)[:20] in message
    assert "000001.png" in message  # says what a frame name looks like


def test_frame_names_of_seven_digits_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "frames.csv"
    path.write_text(csv_text(["filename", "time"], [["999999.png", "0"], ["1000000.png", "1"]]), encoding="utf-8")
    assert read_frames(path)["filename"].tolist() == ["999999.png", "1000000.png"]


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A picture outside any run folder that a hostile table points at."""
    from PIL import Image

    d = tmp_path_factory.mktemp("outside")
    Image.new("RGB", (160, 120), (200, 30, 30)).save(d / "secret.png")
    return d


HOSTILE = ["{outside}/secret.png", "../../outside-target.png", "frames/../../outside-target.png",
           "000002.png\nfile '{outside}/secret.png'"]


@pytest.mark.parametrize("command", ["assemble --from frames", "interrogate", "generate"])
@pytest.mark.parametrize("hostile", HOSTILE, ids=["absolute", "parent", "through frames", "newline"])
def test_a_hostile_table_reads_and_writes_nothing_outside(run: RunFolder, outside: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str], command: str,
                                                         hostile: str) -> None:
    name = hostile.format(outside=outside)
    frames = raw(run.frames_csv)
    df = prompts_rows(run, {n: f"a picture {i}" for i, n in enumerate(frames["filename"])})
    for table, path in ((frames, run.frames_csv), (df, run.prompts_csv)):  # both, as the old code needed
        table.loc[1, "filename"] = name
        table.to_csv(path, index=False)
    before, outside_before = snapshot(run.root), snapshot(outside)
    word, *rest = command.split()
    out = tmp_path / "check.mp4"
    code, err = cli(capsys, word, run.root, *rest, *(["-o", out] if word == "assemble" else []))
    line = one_line_error(code, err)
    assert "frames.csv, row 3" in line and "not a frame name" in line
    assert snapshot(run.root) == before
    assert snapshot(outside) == outside_before
    assert not out.exists()
    assert not (run.root.parent / "outside-target.png").exists()
    assert not (run.root.parent.parent / "outside-target.png").exists()


def test_the_concat_list_refuses_a_path_that_would_add_lines(tmp_path: Path) -> None:
    good = tmp_path / "it's a frame.png"
    script = concat_script([good, good], [0.0, 1.0], 2.0)
    lines = script.splitlines()
    assert [ln.split()[0] for ln in lines if not ln.startswith("option")] == \
        ["ffconcat", "file", "duration", "file", "duration", "file"]  # the last file again, nothing more
    assert "it'\\''s a frame.png" in script  # a quote in a path is escaped, not a way out
    for bad in ("a\nfile '/etc/passwd'.png", "a\rb.png", "a\x00b.png"):
        with pytest.raises(UserError, match="line break or NUL"):
            concat_script([tmp_path / bad], [0.0], 1.0)


# -- 2. a spreadsheet never runs a prompt as a formula; the tool reads back what it wrote -----------

FORMULAS = ["=HYPERLINK(\"http://x\",\"click\")", "+1+1", "-blurry, lowres", "@SUM(A1)", "\tTab first",
            "'=already quoted", "''-two quotes", "'plain quote", "a cat = a dog", "-"]


def test_formula_like_cells_are_escaped_and_read_back_exactly(tmp_path: Path) -> None:
    for text in FORMULAS + ["a cat", "", "'"]:
        assert unescape_cell(escape_cell(text)) == text, text
    path = tmp_path / "prompts.csv"
    df = pd.DataFrame({"filename": [f"{i:06d}.png" for i in range(1, len(FORMULAS) + 1)], "prompt": FORMULAS,
                       "caption": FORMULAS, "negative_prompt": FORMULAS[::-1]})
    write_csv(path, df)
    cells = raw(path)
    for column in ("prompt", "caption", "negative_prompt"):
        # What a spreadsheet sees: no cell starts with a formula character.
        assert not any(c[:1] in ("=", "+", "-", "@", "\t", "\r") for c in cells[column]), cells[column].tolist()
    assert cells.loc[0, "prompt"] == "'" + FORMULAS[0]
    back = read_csv(path, ["filename", "prompt"], "fix it")
    assert back["prompt"].tolist() == FORMULAS
    assert back["negative_prompt"].tolist() == FORMULAS[::-1]


def test_escaping_changes_no_key_and_no_edit_detection(run: RunFolder) -> None:
    settings = resolve(run.saved_settings())
    names = read_frames(run.frames_csv)["filename"].tolist()
    normal = {n: f"a calm sea at dusk {i}, by somebody" for i, n in enumerate(names)}
    formulas = dict(zip(names, ["=cat", "-blurry dog", "@home", "plain"], strict=True))

    # Normal text: the file is byte for byte what plain pandas wrote before, so keys stay.
    old_way = prompts_rows(run, normal).to_csv(index=False, lineterminator="\n")
    write_csv(run.prompts_csv, prompts_rows(run, normal))
    assert run.prompts_csv.read_text(encoding="utf-8") == old_way

    # Formula-like text: escaped in the file, yet the rows are current (not "edited") and the dream
    # keys are those of the words themselves (as when the file holds them unescaped).
    times = dict(zip(names, read_frames(run.frames_csv)["time"], strict=True))
    write_csv(run.prompts_csv, prompts_rows(run, formulas))
    assert "'=cat" in run.prompts_csv.read_text(encoding="utf-8")
    assert set(place_rows(read_prompts(run), row_keys(run, settings, names), times).states.values()) == {"current"}
    escaped_jobs, _ = plan(run, settings)
    prompts_rows(run, formulas).to_csv(run.prompts_csv, index=False)  # the same words, unescaped
    plain_jobs, _ = plan(run, settings)
    assert [j.prompt for j in escaped_jobs] == list(formulas.values())
    assert [j.key for j in escaped_jobs] == [j.key for j in plain_jobs]


# -- 3. a prompts.csv saved by a spreadsheet with `;` (and decimal commas) ---------------------------


def test_a_semicolon_prompts_csv_is_read(run: RunFolder) -> None:
    settings = resolve(run.saved_settings())
    names = read_frames(run.frames_csv)["filename"].tolist()
    texts = {n: f"a dog, a cat; and a bird {i}" for i, n in enumerate(names)}
    df = prompts_rows(run, texts)
    df.to_csv(run.prompts_csv, index=False)
    comma_jobs, _ = plan(run, settings)
    df["time"] = df["time"].str.replace(".", ",", regex=False)  # 1,000000 as a `;` locale writes it
    df.loc[2, "prompt"] = "=edited, by hand"
    run.prompts_csv.write_text("\ufeff" + df.to_csv(index=False, sep=";", lineterminator="\r\n"), encoding="utf-8")
    back = read_prompts(run)
    assert back["prompt"].tolist()[:2] == [texts[n] for n in names[:2]]
    times = dict(zip(names, read_frames(run.frames_csv)["time"], strict=True))
    states = place_rows(back, row_keys(run, settings, names), times).states
    assert [states[n] for n in names] == ["current", "current", "edited", "current"]
    jobs, _ = plan(run, settings)
    assert [j.key for j in jobs][:2] == [j.key for j in comma_jobs][:2]


def test_no_advice_to_delete_a_prompts_csv(run: RunFolder) -> None:
    for text in ('filename,prompt\n000001.png,"a cat\n000002.png,a dog\n', "file,text\n000001.png,a cat\n"):
        run.prompts_csv.write_text(text, encoding="utf-8")
        with pytest.raises(UserError) as e:
            read_prompts(run)
        advice = str(e.value).replace(str(run.prompts_csv), "PATH")
        assert "delete" not in advice and "rename it" in advice, advice


# -- 4. rows follow their moment ------------------------------------------------------------------


def test_rows_follow_their_moment_or_are_orphaned() -> None:
    times = {f"{i:06d}.png": (i - 1) / 2 for i in range(1, 9)}  # 2 fps after 1 fps
    keys = {n: f"key{n}" for n in times}

    def row(name: str, t: str, prompt: str, edited: bool, notes: str = "") -> dict[str, str]:
        return {"filename": name, "prompt": prompt, "time": t, "caption": "", "negative_prompt": "",
                "settings_key": "old", "text_hash": "x" if edited else text_hash(prompt, ""), "notes": notes}

    df = pd.DataFrame([row("000001.png", "0.000000", "first", False),  # its own moment: stays
                       row("000002.png", "1.000000", "two, by hand", True),  # moves to 000003
                       row("000003.png", "2.000000", "three", False, "my note"),  # moves to 000005, stale
                       row("000004.png", "3.000000", "four, by hand", True),  # moves to 000007
                       row("000005.png", "9.000000", "gone, by hand", True),  # no frame at 9 s: orphaned
                       row("000006.png", "5.000000", "gone", False),  # the tool's, no frame: dropped
                       row("000009.png", "", "no time, by hand", True)])  # no such frame: orphaned
    p = place_rows(df, keys, times)
    assert p.moved == [("000002.png", "000003.png"), ("000004.png", "000007.png")]
    assert p.rows["000003.png"]["prompt"] == "two, by hand" and p.rows["000003.png"]["time"] == "1.000000"
    assert p.rows["000005.png"]["notes"] == "my note"
    assert {n: s for n, s in p.states.items()} == {"000001.png": "stale", "000003.png": "edited",
                                                   "000005.png": "stale", "000007.png": "edited"}
    assert [r["prompt"] for r in p.orphaned] == ["gone, by hand", "no time, by hand"]
    assert p.dropped == ["000006.png"]


def test_generate_refuses_a_row_of_another_moment(run: RunFolder) -> None:
    names = read_frames(run.frames_csv)["filename"].tolist()
    df = prompts_rows(run, {n: "a cat" for n in names})
    df.loc[1, "time"] = "2.000000"  # written for the moment now at 000003.png
    df.to_csv(run.prompts_csv, index=False)
    with pytest.raises(UserError, match=r"000002.png is for the moment 2.000 s.* at 1.000 s.*interrogate"):
        plan(run, resolve(run.saved_settings()))
    df.loc[1, "time"] = "1"  # the same moment, written by a spreadsheet: fine
    df.to_csv(run.prompts_csv, index=False)
    assert len(plan(run, resolve(run.saved_settings()))[0]) == FRAMES


@pytest.mark.parametrize("moment", ["after the merge", "with the temporary written"])
def test_an_edit_saved_just_before_the_rename_is_merged(run: RunFolder, monkeypatch: pytest.MonkeyPatch,
                                                        moment: str) -> None:
    """The user saves prompts.csv after interrogate merged it and before its rename (the window of
    the compare-then-write): the edit is merged on a second pass, never written over."""
    settings = resolve(run.saved_settings())
    units, table = interrogate_stage.plan_units(run, settings)

    def result(i: int) -> list:
        return [(units[i], Caption(f"caption {i}", f"prompt {i}", ""))]

    interrogate_stage.commit(run, table, result(0))
    saved: list[str] = []

    def save_edit() -> None:
        if not saved:  # once: the second pass must find the file as it merged it
            mine = raw(run.prompts_csv)
            mine.loc[0, "prompt"] = "my own words"
            mine.to_csv(run.prompts_csv, index=False)
            saved.append("saved")

    if moment == "after the merge":
        real_merge = interrogate_stage._take_edits

        def merge_then_edit(*args: object) -> list[str]:
            theirs = real_merge(*args)  # type: ignore[arg-type]
            save_edit()
            return theirs

        monkeypatch.setattr(interrogate_stage, "_take_edits", merge_then_edit)
    else:
        real_write = interrogate_stage.write_csv

        def write_then_edit(path: Path, df: pd.DataFrame, before_replace=None) -> str:  # noqa: ANN001
            def edit_then_check() -> None:
                save_edit()
                if before_replace is not None:
                    before_replace()

            return real_write(path, df, edit_then_check)

        monkeypatch.setattr(interrogate_stage, "write_csv", write_then_edit)
    interrogate_stage.commit(run, table, result(1))
    assert saved
    df = raw(run.prompts_csv)
    assert df["prompt"].tolist() == ["my own words", "prompt 1"]
    assert table.result.edited_meanwhile == ["000001.png"]
    assert table.seen == run.prompts_csv.read_bytes()  # the next batch compares with what is there


def test_a_file_that_keeps_changing_is_one_line_and_left_as_it_is(run: RunFolder,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = resolve(run.saved_settings())
    units, table = interrogate_stage.plan_units(run, settings)
    interrogate_stage.commit(run, table, [(units[0], Caption("c", "p", ""))])
    real_write = interrogate_stage.write_csv
    edits = []

    def always_edited(path: Path, df: pd.DataFrame, before_replace=None) -> str:  # noqa: ANN001
        def edit_then_check() -> None:
            edits.append(1)
            path.write_text(f"filename,prompt\n000001.png,edit {len(edits)}\n")
            before_replace()

        return real_write(path, df, edit_then_check)

    monkeypatch.setattr(interrogate_stage, "write_csv", always_edited)
    with pytest.raises(UserError, match="kept changing"):
        interrogate_stage.commit(run, table, [(units[1], Caption("c", "p", ""))])
    assert len(edits) == interrogate_stage.MERGE_TRIES
    assert run.prompts_csv.read_text() == f"filename,prompt\n000001.png,edit {len(edits)}\n"


# -- the same, through the command line on the tiny models ----------------------------------------

TINY = ("--preset", "tiny", "--seed", "10")


@pytest.fixture(scope="module")
def base(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("trust-base") / "run"
    ok(None, "run", clip, "-o", run, *TINY)
    return run


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_hand_edits_follow_their_moment_after_extracting_again(base: Path, clip: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from video2dream.pngmeta import parse_parameters, read_parameters

    run = Path(shutil.copytree(base, tmp_path / "run"))
    df = raw(run / "prompts.csv")
    df.loc[1, "prompt"] = "=a lighthouse, by hand"  # 000002.png, at 1 s
    df.loc[3, "prompt"] = "a whale, by hand"  # 000004.png, at 3 s
    df["notes"] = ["", "keep me", "", ""]
    # Saved as a spreadsheet in a `;` locale saves it: `;` between cells, decimal commas.
    df["time"] = df["time"].str.replace(".", ",", regex=False)
    (run / "prompts.csv").write_text(df.to_csv(index=False, sep=";"), encoding="utf-8")

    ok(capsys, "extract", clip, "-o", run, "--fps", "2")  # 000002.png is now 0.5 s, 000003.png 1 s
    line = one_line_error(*cli(capsys, "generate", run))
    assert "000002.png is for the moment 1.000 s" in line and "interrogate" in line

    err = ok(capsys, "interrogate", run)
    assert "000002.png -> 000003.png, 000004.png -> 000007.png" in err
    out = raw(run / "prompts.csv")  # the tool's own `,` form again
    assert out.loc[2, "prompt"] == "'=a lighthouse, by hand" and out.loc[2, "time"] == "1.000000"
    assert out.loc[2, "notes"] == "keep me"
    assert out.loc[6, "prompt"] == "a whale, by hand"
    assert "by hand" not in " ".join(out.loc[[0, 1, 3, 4, 5, 7], "prompt"])

    ok(capsys, "generate", run)
    painted = {n: parse_parameters(read_parameters(run / "dreams" / n) or "")["prompt"]
               for n in ("000002.png", "000003.png", "000007.png")}
    assert painted["000003.png"] == "=a lighthouse, by hand"
    assert painted["000007.png"] == "a whale, by hand"
    assert "by hand" not in painted["000002.png"]

    # A start between the old moments: no frame is at 1 s or 3 s now; the edits go to prompts_orphaned.csv.
    ok(capsys, "extract", clip, "-o", run, "--fps", "2", "--start", "0.25")
    err = ok(capsys, "interrogate", run)
    assert "prompts_orphaned.csv" in err
    orphans = read_csv(orphans_path(RunFolder(run)), ["filename", "prompt"], "")  # unescaped again
    assert sorted(orphans["prompt"]) == ["=a lighthouse, by hand", "a whale, by hand"]
    assert "by hand" not in " ".join(raw(run / "prompts.csv")["prompt"])
    ok(capsys, "generate", run)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_an_edit_made_while_interrogate_runs_is_kept(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = Path(shutil.copytree(base, tmp_path / "run"))
    (run / "prompts.csv").unlink()
    writes: list[str] = []
    real_write = interrogate_stage.write_csv

    def write_then_edit(path: Path, df: pd.DataFrame, *args: object) -> str:
        text = real_write(path, df, *args)
        writes.append(raw(path)["filename"].tolist()[-1])
        if len(writes) == 1:  # between the first and the second batch, the user saves an edit
            mine = raw(path)
            mine.loc[0, "prompt"] = "my own words"  # a row this run wrote already
            mine["notes"] = ["a note"]
            extra = {c: "" for c in mine.columns} | {"filename": "000003.png", "prompt": "typed ahead", "time": "2"}
            pd.concat([mine, pd.DataFrame([extra])]).to_csv(path, index=False)  # a row not yet reached
        return text

    monkeypatch.setattr(interrogate_stage, "write_csv", write_then_edit)
    err = ok(capsys, "interrogate", run, "--batch-size", "1")
    assert len(writes) == 3  # 000003.png was not interrogated: the user's row stood
    assert "edited by hand while interrogate ran (000001.png, 000003.png)" in err
    assert "2 row(s) written" in err and "2 hand-edited kept" in err
    df = raw(run / "prompts.csv")
    assert df["filename"].tolist() == [f"{i:06d}.png" for i in range(1, FRAMES + 1)]
    assert df.loc[0, "prompt"] == "my own words" and df.loc[0, "notes"] == "a note"
    assert df.loc[2, "prompt"] == "typed ahead"
    assert all(df.loc[i, "text_hash"] == text_hash(df.loc[i, "prompt"], "") for i in (1, 3))

    monkeypatch.undo()
    err = ok(capsys, "interrogate", run)  # and the next run keeps them as any hand edit
    assert "kept 2 hand-edited row(s) of prompts.csv (000001.png, 000003.png)" in err
    assert raw(run / "prompts.csv").equals(df)
