"""Settings resolution: defaults < saved run settings < preset < config file < flags."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from video2dream.errors import UserError
from video2dream.settings import PRESETS_DIR, resolve


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
def test_every_preset_resolves(preset: str) -> None:
    resolve(preset=preset)


@pytest.mark.parametrize("old, new", [("tiny", "default"), ("tiny", "turbo"), ("default", "tiny"),
                                      ("turbo", "default")])
def test_switching_model_presets_leaves_nothing_of_the_old_one(old: str, new: str) -> None:
    saved = resolve(preset=old).to_dict()
    switched, fresh = resolve(saved=saved, preset=new), resolve(preset=new)
    for part in ("interrogate", "generate"):
        assert asdict(getattr(switched, part)) == asdict(getattr(fresh, part))
    assert (switched.device, switched.dtype) == (fresh.device, fresh.dtype)


def test_order_of_precedence(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("generate:\n  steps: 12\n  guidance: 3.5\n", encoding="utf-8")
    saved = {"generate": {"steps": 50, "seed": 9}}
    s = resolve(saved=saved, preset="tiny", config=config, overrides={"generate": {"guidance": 1.5}})
    assert s.generate.model == "tiny:sdxl"  # preset
    assert s.generate.steps == 12  # config over preset and saved
    assert s.generate.guidance == 1.5  # flags over config
    assert s.generate.seed == 9  # saved, untouched by the rest


@pytest.mark.parametrize("text, message", [
    ("generate: [1, 2]\n", "must be a mapping"),
    ("nonsense: {a: 1}\n", "unknown section"),
    ("generate: {stepz: 3}\n", "unknown setting 'stepz'"),
    ("generate: {steps: [\n", "not valid YAML"),
])
def test_bad_config_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message) as err:
        resolve(config=config)
    assert "\n" not in str(err.value)
