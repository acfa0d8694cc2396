"""Settings the run folder can trust: nothing out of range or of the wrong type is ever saved, every
remembered option has a way back, saved paths work from anywhere, the resume hint resumes what was
asked, and the original telephone game's command line works."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, cli, make_clip, snapshot

from video2dream.errors import UserError
from video2dream.models.sizes import generation_size
from video2dream.settings import MAX_SEED, describe, resolve


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("trust-clip")
    return make_clip(d / "clip.mp4", "testsrc2=size=96x64:rate=10:duration=2", "sine=duration=2",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"))


@pytest.fixture(scope="module")
def base(clip: Path, tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> Path:
    """`extract --preset tiny` (2 frames) and `interrogate`: a folder ready for generate."""
    run = tmp_path_factory.mktemp("trust") / "run"
    assert cli("extract", clip, "-o", run, "--preset", "tiny") == 0
    assert cli("interrogate", run) == 0
    return run


def saved(run: Path) -> dict:
    return yaml.safe_load((run / "settings.yaml").read_text(encoding="utf-8"))


def refused(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """Run a command that must fail with one clean line; its stderr."""
    capsys.readouterr()
    code = cli(*args)
    out, err = capsys.readouterr()
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("video2dream: error:"), err
    assert "unexpected error" not in err and "Traceback" not in out + err
    return err


# -- 1. values that would poison the folder are refused before anything is saved ---------------------

BIG = str(MAX_SEED + 1)
POISON = [
    ("seed past 2^63-1", "generate {run} --seed " + BIG, "--seed"),
    ("negative seed", "generate {run} --seed -1", "--seed"),
    ("huge steps", "generate {run} --steps 100000", "--steps"),
    ("guidance nan", "generate {run} --guidance nan", "--guidance"),
    ("guidance inf", "generate {run} --guidance inf", "--guidance"),
    ("strength nan", "generate {run} --strength nan", "--strength"),
    ("strength 2", "generate {run} --strength 2", "--strength"),
    ("giant width", "generate {run} --width 100000 --height 64", "--width"),
    ("pixel cap", "generate {run} --width 8192 --height 8192", "4096x4096"),
    ("batch 10^6", "generate {run} --batch-size 1000000", "--batch-size"),
    ("fps inf", "extract {clip} -o {run} --fps inf", "--fps"),
    ("fps nan", "extract {clip} -o {run} --fps nan", "--fps"),
    ("fps tiny", "extract {clip} -o {run} --fps 0.0000001", "--fps"),
    ("fps 1e9", "extract {clip} -o {run} --fps 1e9", "--fps"),
    ("start inf", "extract {clip} -o {run} --start inf", "--start"),
    ("out-fps 1e9", "assemble {run} --from frames --out-fps 1e9", "--out-fps"),
    ("out-fps nan", "assemble {run} --from frames --out-fps nan", "--out-fps"),
    ("crf 99", "assemble {run} --from frames --crf 99", "--crf"),
    ("min-length past BLIP", "interrogate {run} --min-length 600 --max-length 700", "512"),
    ("num-beams 10^6", "interrogate {run} --num-beams 1000000", "--num-beams"),
    ("telephone steps 10^6", "telephone {clip}.missing.png -o {run} --steps 1000000", "--steps"),
]


@pytest.mark.parametrize("command, words", [c[1:] for c in POISON], ids=[c[0] for c in POISON])
def test_poisonous_values_are_refused_and_nothing_is_saved(
    base: Path, clip: Path, capsys: pytest.CaptureFixture[str], command: str, words: str
) -> None:
    before = snapshot(base)
    err = refused(capsys, *shlex.split(command.format(run=shlex.quote(str(base)), clip=shlex.quote(str(clip)))))
    assert words in err, err
    assert snapshot(base) == before


WRONG_TYPES = [
    ("generate:\n  steps: many\n", "generate.steps"),
    ("generate:\n  steps: [1, 2]\n", "generate.steps"),
    ("generate:\n  steps: 5.5\n", "generate.steps"),
    ("generate:\n  steps: true\n", "generate.steps"),
    ("generate:\n  guidance: .nan\n", "generate.guidance"),
    ("generate:\n  guidance: '7'\n", "generate.guidance"),
    ("generate:\n  seed: {a: 1}\n", "generate.seed"),
    ("generate:\n  model: 5\n", "generate.model"),
    ("extract:\n  fps: fast\n", "extract.fps"),
    ("extract:\n  fps: .inf\n", "extract.fps"),
    ("assemble:\n  side_by_side: 'yes'\n", "assemble.side_by_side"),
    ("assemble:\n  crf: 18.5\n", "assemble.crf"),
    ("interrogate:\n  num_beams: null\n", "interrogate.num_beams"),
    ("telephone:\n  hold: [1]\n", "telephone.hold"),
    ("device: [cpu]\n", "device"),
]


@pytest.mark.parametrize("text, setting", WRONG_TYPES, ids=[t for t, _ in WRONG_TYPES])
def test_a_wrong_type_is_one_line_naming_the_setting(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, setting: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    before = snapshot(base)
    err = refused(capsys, "assemble", base, "--from", "frames", "--config", config)
    assert setting in err and str(config) in err, err
    assert snapshot(base) == before


def test_a_poisoned_settings_yaml_names_itself_and_a_flag_fixes_it(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder whose settings.yaml an older version let a bad value into: every plain command says
    where the value is and how to replace it; the flag does, and the fixed value is saved."""
    run = shutil.copytree(base, tmp_path / "run")
    data = saved(run)
    data["assemble"]["out_fps"] = 1e9
    (run / "settings.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    err = refused(capsys, "assemble", run, "--from", "frames", "-o", tmp_path / "check.mp4")
    assert "settings.yaml" in err and "give --out-fps" in err, err
    assert cli("assemble", run, "--from", "frames", "-o", tmp_path / "check.mp4", "--out-fps", "5") == 0
    assert saved(run)["assemble"]["out_fps"] == 5


def test_blip_lengths_are_checked_against_the_loaded_model(one_torch_thread) -> None:
    from video2dream.models.captioner import Captioner

    captioner = Captioner("tiny:blip", "cpu")
    assert captioner.max_tokens == 512
    captioner.check_lengths(5, 512)
    with pytest.raises(UserError, match="at most 512 tokens"):
        captioner.check_lengths(5, 513)


@pytest.mark.parametrize("size", [(1, 4000), (4000, 1), (3, 2000), (10000, 7)])
def test_a_very_wide_or_tall_input_is_painted_at_4_to_1_at_most(size: tuple[int, int]) -> None:
    w, h = generation_size(*size)
    assert max(w, h) / min(w, h) <= 4 and max(w, h) <= 2048, (w, h)
    assert w * h <= 1024 * 1024 * 1.1
    assert generation_size(1920, 1080) == (1344, 768)  # ordinary shapes as before


# -- 2. the resume hint resumes what was asked -------------------------------------------------------

@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_the_resume_hint_repeats_the_flags(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the painter loads (before the settings are saved): the hint must still paint at
    --steps 2, and running it does."""
    from video2dream.models.cache import ModelCache
    from video2dream.pngmeta import read_png_text

    run = shutil.copytree(base, tmp_path / "my run")  # a space: the hint must quote it
    before = (run / "settings.yaml").read_bytes()

    def interrupted(self, settings):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ModelCache, "painter", interrupted)
        capsys.readouterr()
        assert cli("generate", run, "--steps", "2", "--seed", "7") == 130
    err = capsys.readouterr().err
    hint = err.split("Resume with: ", 1)[1].strip()
    assert hint == f"video2dream generate {shlex.quote(str(run))} --steps 2 --seed 7"
    assert (run / "settings.yaml").read_bytes() == before  # nothing was saved: the flags live in the hint

    assert cli(*shlex.split(hint)[1:]) == 0
    assert saved(run)["generate"]["steps"] == 2
    for dream in sorted((run / "dreams").glob("*.png")):
        assert "Steps: 2," in read_png_text(dream)["parameters"]


# -- 3. local paths are saved absolute -------------------------------------------------------------

def test_a_relative_audio_path_works_from_another_directory(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = shutil.copytree(base, tmp_path / "run")
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    make_clip(here / "song.wav", "sine=frequency=330:duration=2")
    monkeypatch.chdir(here)
    assert cli("assemble", run, "--from", "frames", "--audio", "song.wav", "-o", tmp_path / "a.mp4") == 0
    assert saved(run)["assemble"]["audio"] == str(here / "song.wav")
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert cli("assemble", run, "--from", "frames", "-o", tmp_path / "b.mp4") == 0
    assert "song.wav" in capsys.readouterr().err


def test_local_model_paths_become_absolute_and_hub_ids_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for folder in ("blip", "sdxl", "vae"):
        (tmp_path / folder).mkdir()
    (tmp_path / "style.safetensors").write_bytes(b"x")
    (tmp_path / "clip.pt").write_bytes(b"x")
    config = tmp_path / "mine.yaml"
    config.write_text("generate: {vae: vae}\n", encoding="utf-8")
    s = resolve(config=config, overrides={
        "interrogate": {"caption_model": "./blip", "clip_model": "ViT-B-32/clip.pt"},
        "generate": {"model": "sdxl", "lora": "style.safetensors:0.7"}})
    assert s.interrogate.caption_model == str(tmp_path / "blip")
    assert s.interrogate.clip_model == f"ViT-B-32/{tmp_path / 'clip.pt'}"
    assert s.generate.model == str(tmp_path / "sdxl")
    assert s.generate.vae == str(tmp_path / "vae")
    assert s.generate.lora == f"{tmp_path / 'style.safetensors'}:0.7"
    hub = resolve(overrides={"generate": {"model": "stabilityai/sdxl-turbo", "lora": "someone/lora:0.5",
                                          "vae": "madebyollin/sdxl-vae-fp16-fix"},
                             "interrogate": {"clip_model": "ViT-L-14/openai"}})
    assert (hub.generate.model, hub.generate.lora, hub.generate.vae, hub.interrogate.clip_model) == (
        "stabilityai/sdxl-turbo", "someone/lora:0.5", "madebyollin/sdxl-vae-fp16-fix", "ViT-L-14/openai")


# -- 4. every remembered option can be turned off -----------------------------------------------------

def _flags(*argv: str) -> dict:
    from video2dream.cli import build_parser, overrides

    return overrides(build_parser().parse_args(list(argv)))


def test_every_remembered_option_has_a_way_back() -> None:
    on = resolve(overrides=_flags("generate", "r", "--strength", "0.5", "--width", "512", "--height", "256",
                                  "--lora", "a/b", "--scheduler", "DDIMScheduler", "--compile",
                                  "--preview-vae", "madebyollin/taesdxl"))
    on = resolve(saved=on.to_dict(), overrides=_flags("assemble", "r", "--side-by-side"))
    on = resolve(saved=on.to_dict(), overrides=_flags("extract", "v", "-o", "r", "--start", "1", "--end", "2"))
    assert on.generate.strength == 0.5 and on.generate.compile and on.assemble.side_by_side
    off = resolve(saved=on.to_dict(), overrides=_flags(
        "generate", "r", "--strength", "0", "--width", "auto", "--lora", "none", "--scheduler", "default",
        "--no-compile", "--preview-vae", "none"))
    off = resolve(saved=off.to_dict(), overrides=_flags("assemble", "r", "--no-side-by-side"))
    off = resolve(saved=off.to_dict(), overrides=_flags("extract", "v", "-o", "r", "--start", "none", "--end", "none"))
    g = off.generate
    assert (g.strength, g.width, g.height, g.lora, g.scheduler, g.compile, g.preview_vae) == (
        None, None, None, None, None, False, None)
    assert off.assemble.side_by_side is False
    assert (off.extract.start, off.extract.end) == (None, None)
    assert describe(off) == []  # all back to the built-in defaults
    assert resolve(overrides=_flags("generate", "r", "--strength", "none")).generate.strength is None
    assert resolve(overrides=_flags("generate", "r", "--width", "0", "--height", "0")).generate.width is None
    vae = resolve(saved={"generate": {"vae": "x/y"}}, overrides=_flags("generate", "r", "--vae", "none"))
    assert vae.generate.vae is None


@pytest.mark.slow  # heavy for the quick suite (-m "not slow"): CI runs it
def test_strength_0_goes_back_to_text_to_image(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from video2dream.pngmeta import read_png_text

    run = shutil.copytree(base, tmp_path / "run")
    assert cli("generate", run, "--strength", "0.5", "--steps", "2") == 0
    assert saved(run)["generate"]["strength"] == 0.5
    assert cli("generate", run, "--strength", "0") == 0
    assert saved(run)["generate"]["strength"] is None
    for dream in sorted((run / "dreams").glob("*.png")):
        assert "Denoising strength" not in read_png_text(dream)["parameters"]
    capsys.readouterr()
    assert cli("status", run) == 0
    out = capsys.readouterr().out
    assert "settings" in out and "model=tiny:sdxl" in out and "steps=2" in out, out


# -- 5. the original telephone game's command line --------------------------------------------------

def test_the_original_telephone_command_line_is_understood(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from video2dream.cli import build_parser

    parse = build_parser().parse_args
    original = parse(["telephone", "--image_path", "cover.png", "--steps", "10", "--min_length", "30",
                      "--max_length", "100", "--num_beams", "5", "--no_repeat_ngram_size", "2",
                      "--output_prefix", "output"])
    ours = parse(["telephone", "cover.png", "-o", "output", "--steps", "10", "--min-length", "30",
                  "--max-length", "100", "--num-beams", "5", "--no-repeat-ngram-size", "2"])
    assert vars(original) == vars(ours)
    assert vars(original)["set:telephone.steps"] == 10  # the chain's length, as in the original
    odd = parse(["telephone", "--output_prefix=out", "--image_path=-odd.png", "--steps_per_image", "3",
                 "--no_stop_at_fixed_point"])
    assert (odd.video, odd.run_dir, vars(odd)["set:generate.steps"]) == ("-odd.png", "out", 3)
    assert vars(odd)["set:telephone.stop_at_fixed_point"] is False
    err = refused(capsys, "telephone", "--image_path", tmp_path / "missing.png", "--output_prefix", tmp_path / "o")
    assert "missing.png" in err and "not found" in err
    capsys.readouterr()
    assert cli("telephone", "--help") == 0
    assert "_" not in "".join(w for w in capsys.readouterr().out.split() if w.startswith("--"))  # hidden


# -- 6. quickstart.sh: one run folder per video ----------------------------------------------------

def test_quickstart_uses_one_folder_per_video_and_prints_it(tmp_path: Path) -> None:
    """The script in a copy of the project whose .venv is shims: pip does nothing, video2dream
    records its arguments (no install, no models)."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "quickstart.sh", project / "scripts")
    bin_dir = project / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shims = {"python": f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" "$@"\n',
             "pip": "#!/bin/sh\nexit 0\n",
             "video2dream": '#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\n'}
    for name, text in shims.items():
        (bin_dir / name).write_text(text, encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    first, second = tmp_path / "holiday.mp4", tmp_path / "my party.mov"
    for video in (first, second):
        video.write_bytes(b"not needed by the shim")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    outputs = [subprocess.run(["bash", str(project / "scripts" / "quickstart.sh"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600, check=True).stdout
               for args in (["holiday.mp4"], [str(second), "--preset", "default"], [])]
    calls = (bin_dir / "calls").read_text(encoding="utf-8").splitlines()
    assert calls[0] == f"run {first} -o runs/quickstart-holiday --preset tiny"
    assert calls[1] == f"run {second} -o runs/quickstart-my party --preset tiny --preset default"
    assert calls[2] == "run runs/quickstart-clip.mp4 -o runs/quickstart --preset tiny"
    assert f"done: {project}/runs/quickstart-holiday/dream.mp4" in outputs[0]
    assert f"done: {project}/runs/quickstart-my party/dream.mp4" in outputs[1]
    assert f"done: {project}/runs/quickstart/dream.mp4" in outputs[2]
    assert (project / "runs" / "quickstart-clip.mp4").stat().st_size > 0


def test_telephone_saves_no_scheduler_or_lora_it_cannot_use(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """telephone saves its settings before its models load: what can be checked without them is
    checked first."""
    image = make_clip(tmp_path / "cover.png", "testsrc2=size=64x48", args=("-frames:v", "1"))
    out = tmp_path / "chain"
    err = refused(capsys, "telephone", image, "-o", out, "--preset", "tiny", "--scheduler", "NoSuchScheduler")
    assert "unknown scheduler" in err
    err = refused(capsys, "telephone", image, "-o", out, "--preset", "tiny", "--lora", "./no/such.safetensors")
    assert "no/such.safetensors" in err
    assert not (out / "settings.yaml").exists()


def test_fps_above_the_sources_is_said_not_refused(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refusing it would make a saved --fps fail the next, slower video: the command says it instead."""
    capsys.readouterr()
    assert cli("extract", clip, "-o", tmp_path / "run", "--fps", "20") == 0
    assert "above the frame rate of clip.mp4 (10 fps)" in capsys.readouterr().err


def test_a_typed_caption_length_moves_the_other_end_of_the_range() -> None:
    """The README's `interrogate --min-length 40` on a tiny-preset folder (maximum 20) works as written."""
    from video2dream.settings import resolve

    saved = resolve(preset="tiny").to_dict()
    i = resolve(saved, overrides={"interrogate": {"min_length": 40}}).interrogate
    assert (i.min_length, i.max_length) == (40, 40)
    i = resolve(saved, overrides={"interrogate": {"max_length": 3}}).interrogate
    assert (i.min_length, i.max_length) == (3, 3)
    with pytest.raises(UserError, match=r"interrogate\.max_length"):
        resolve(saved, overrides={"interrogate": {"min_length": 40, "max_length": 30}})
    with pytest.raises(UserError, match=r"interrogate\.max_length"):  # from a file: no guessing which end was meant
        resolve(overrides=None, saved={"interrogate": {"min_length": 40, "max_length": 30}})


# -- 7. settings files that would hang, crash or vanish ----------------------------------------------

ALIAS_LIST = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
             "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
HOSTILE = [  # (case, the file's text, words the one line has besides the file's name)
    ("4-level alias list", "generate:\n  steps: &s [1, 1, 1, 1, 1, 1, 1, 1, 1]\n  model: *s\n", "alias"),
    ("alias list as a section", ALIAS_LIST.replace("d: &d", "generate: &d"), "alias"),
    ("5000 nested lists", "generate:\n  steps: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("5000 nested maps", "generate:\n  steps: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "nested"),
    ("400 digits for a float", "generate:\n  guidance: " + "1" * 400 + "\n", "generate.guidance"),
    ("5000 digits for a float", "generate:\n  guidance: " + "9" * 5000 + "\n", "generate.guidance"),
    ("400 digits for an int", "generate:\n  seed: " + "7" * 400 + "\n", "generate.seed"),
    ("a path as morph_model", "replicate:\n  morph_model: ./film\n", "replicate.morph_model"),
    ("../ as caption_model", "replicate:\n  caption_model: ../x\n", "replicate.caption_model"),
    ("newline in ray_address", 'ray_address: "head:6379\\nx"\n', "ray_address"),
    ("NUL in ray_address", 'ray_address: "head:6379\\0"\n', "ray_address"),
    ("NUL in audio", 'assemble:\n  audio: "song\\0.wav"\n', "assemble.audio"),
    ("empty", "", "holds nothing"),
    ("null", "null\n", "holds nothing"),
    ("a list", "- generate\n- steps\n", "holds a list"),
    ("over 1 MiB", "# padding\n" * 110_000 + "generate: {steps: 3}\n", "larger than"),
]


@pytest.mark.parametrize("text, words", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_hostile_config_file_is_one_short_line(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    config = tmp_path / "hostile.yaml"
    config.write_text(text, encoding="utf-8")
    before = snapshot(base)
    err = refused(capsys, "assemble", base, "--from", "frames", "--config", config)
    assert words in err and str(config) in err, err
    assert len(err) < 400, err  # no value echoed whole
    assert snapshot(base) == before


SAVED_HOSTILE = [c for c in HOSTILE if c[0] in ("4-level alias list", "alias list as a section", "5000 nested lists",
                                                "400 digits for a float", "empty", "null", "a list", "NUL in audio")]


@pytest.mark.parametrize("text, words", [c[1:] for c in SAVED_HOSTILE], ids=[c[0] for c in SAVED_HOSTILE])
def test_a_hostile_settings_yaml_is_refused_and_kept(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    """Valid YAML that holds no settings (empty, null, a list) was replaced by the defaults: the
    run's settings lost, and the next generate on full SDXL. Now every command refuses it, naming it."""
    run = shutil.copytree(base, tmp_path / "run")
    (run / "settings.yaml").write_text(text, encoding="utf-8")
    before = snapshot(run)
    for command in (("status", run), ("generate", run), ("assemble", run, "--from", "frames")):
        err = refused(capsys, *command)
        assert "settings.yaml" in err and words in err and len(err) < 400, err
    assert snapshot(run) == before


def test_a_billion_laughs_is_refused_at_once() -> None:
    """The 1.9 KB bomb that took `status` past 2 GB: refused at its first alias, whatever it expands to."""
    from video2dream import safeyaml

    levels = ["lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"lol{k}: &lol{k} [" + ", ".join([f"*lol{k - 1}"] * 9) + "]" for k in range(1, 10)]
    with pytest.raises(safeyaml.Unsafe, match=r"line 2: an alias \(\*lol0\)"):
        safeyaml.load("\n".join(levels) + "\n")
    assert safeyaml.load("generate: {steps: 3}\nextract: {fps: 0.5}\n") == {"generate": {"steps": 3},
                                                                             "extract": {"fps": 0.5}}
    assert repr(safeyaml.load("n: " + "1" * 5000)["n"]) == "a number of 5000 digits"


def test_long_values_are_cut_in_messages() -> None:
    from video2dream.errors import short

    assert short("abc") == "'abc'"
    assert short("a" * 10_000) == repr("a" * 57 + "...") + " (10000 characters)"
    assert short(10**400) == "a number of about 401 digits"
    many = list(range(6561))
    assert short(many) == repr(many)[:57] + f"... ({len(repr(many))} characters)"
    with pytest.raises(UserError) as e:
        resolve(overrides={"generate": {"steps": list(range(6561))}})
    assert len(str(e.value)) < 200


@pytest.mark.parametrize("model", ["a" * 10_000, "org/" + "a" * 10_000, "a/b\nc", "x" * 300 + "/y"])
def test_a_model_that_is_no_id_or_path_is_one_short_line(
    base: Path, capsys: pytest.CaptureFixture[str], model: str
) -> None:
    before = snapshot(base)
    err = refused(capsys, "generate", base, "--model", model)
    assert "--model is neither a model id nor a local path" in err and len(err) < 300, err
    assert snapshot(base) == before


def test_a_failed_load_names_a_long_model_briefly() -> None:
    from video2dream.models import hub

    name = "a/" + "b" * 300  # a part longer than a file name may be: no path, and no hub id
    with pytest.raises(UserError) as e, hub.loading("SDXL model", name):
        raise OSError("no such model")
    assert "cannot load SDXL model 'a/bbb" in str(e.value) and len(str(e.value)) < 400, e.value


# -- 8. the resume hint says how the tool was started --------------------------------------------------

@pytest.mark.parametrize("argv0, orig, program", [
    (".venv/bin/video2dream", None, ".venv/bin/video2dream"),
    ("/opt/my tools/video2dream", None, "'/opt/my tools/video2dream'"),
    ("/x/video2dream/__main__.py", [".venv/bin/python", "-m", "video2dream"], ".venv/bin/python -m video2dream"),
    ("/x/video2dream/__main__.py", ["python3", "-X", "dev", "-m", "video2dream"], "python3 -X dev -m video2dream"),
])
def test_the_resume_hint_starts_the_tool_as_it_was_started(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv0: str, orig: list[str] | None,
    program: str
) -> None:
    """Without an activated venv, `video2dream ...` is not found: the hint repeats what was typed."""
    from video2dream import cli as cli_module

    args = ["generate", "my run", "--steps", "2"]
    monkeypatch.setattr(sys, "argv", [argv0, *args])
    monkeypatch.setattr(sys, "orig_argv", [*(orig or ["/usr/bin/python3", argv0]), *args])
    monkeypatch.setattr(cli_module, "dispatch", lambda parsed: (_ for _ in ()).throw(KeyboardInterrupt()))
    monkeypatch.setattr(cli_module, "exit_now", sys.exit)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli_module.main()
    assert e.value.code == 130
    assert capsys.readouterr().err.split("Resume with: ", 1)[1].strip() == f"{program} generate 'my run' --steps 2"


def test_the_resume_hint_names_a_script_on_path_by_its_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from video2dream import cli as cli_module

    script = tmp_path / "video2dream"
    script.write_text("#!/bin/sh\n", encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sys, "argv", [str(script), "generate", "r"])
    monkeypatch.setattr(cli_module, "dispatch", lambda parsed: (_ for _ in ()).throw(KeyboardInterrupt()))
    monkeypatch.setattr(cli_module, "exit_now", sys.exit)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli_module.main()
    assert capsys.readouterr().err.split("Resume with: ", 1)[1].strip() == "video2dream generate r"


@pytest.mark.slow
def test_offline_a_missing_vae_is_one_line_without_library_warnings(base: Path, tmp_path: Path) -> None:
    """diffusers hands huggingface_hub a deprecated argument: its 2-line UserWarning came first."""
    run = shutil.copytree(base, tmp_path / "run")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("VIDEO2DREAM_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "video2dream", "generate", str(run), "--vae", "nobody/no-vae"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("video2dream: error: cannot load VAE 'nobody/no-vae'"), done.stderr


def test_a_config_path_that_cannot_be_read_is_one_short_line(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "settings.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    before = snapshot(base)
    long = "x" * 5000
    for args in (("--config", long), ("--preset", long), ("--preset", long + ".yaml"), ("--config", fifo)):
        err = refused(capsys, "assemble", base, "--from", "frames", *args)
        assert len(err) < 400 and ("not a regular file" in err or "not found" in err or "unknown preset" in err), err
    assert snapshot(base) == before
