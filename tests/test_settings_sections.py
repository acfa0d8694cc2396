"""A backend may bring its own settings section (`mybackend: {speed: 3}` in a config file) without
editing settings.py: register_section. Registering changes the Settings class for the whole process,
so the new backend is defined in a child Python (the other tests see the built-in sections only)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from video2dream.settings import SECTIONS, Settings, resolve

CHILD = textwrap.dedent("""
    import dataclasses, sys
    from dataclasses import dataclass
    from video2dream import backends, settings as S
    from video2dream.backends.local import LocalBackend
    from video2dream.errors import SettingError, UserError

    @dataclass
    class MyBackendSettings:
        speed: int = S.setting(1, S.KEY)
        region: str = S.setting("eu", S.SPEED)

    def check(s, origins):
        S.check_setting(s.mybackend.region in ("eu", "us"), "mybackend.region", "must be eu or us", origins=origins)

    S.register_section("mybackend", MyBackendSettings, ranges=[
        ("mybackend.speed", S.within(1, 10), "from 1 to 10")], check=check)

    @backends.register("mybackend")
    class MyBackend(LocalBackend):
        @classmethod
        def key_part(cls, kind, settings):
            return {"backend": "mybackend", "speed": settings.mybackend.speed}

    s = S.resolve(preset="tiny", config=sys.argv[1], overrides={"backend": "mybackend"})
    assert s.mybackend.speed == 3 and s.mybackend.region == "eu", s.mybackend
    assert backends.key_part(s.backend, "paint", s) == {"backend": "mybackend", "speed": 3}
    saved = s.to_dict()
    assert list(saved)[-2:] == ["replicate", "mybackend"] and saved["mybackend"] == {"speed": 3, "region": "eu"}
    again = S.resolve(saved=saved)  # the run folder's settings.yaml reads back
    assert again.mybackend == s.mybackend and again == dataclasses.replace(again)
    assert S.replace_section(again, "mybackend", speed=4).mybackend.speed == 4 and again.mybackend.speed == 3
    assert S.differences(again)["mybackend"] == {"speed": 3}
    for bad, path in (({"speed": 11}, "mybackend.speed"), ({"speed": "x"}, "mybackend.speed"),
                      ({"region": "mars"}, "mybackend.region")):
        try:
            S.resolve(overrides={"mybackend": bad})
        except SettingError as e:
            assert e.path == path, (e.path, path)
        else:
            raise AssertionError(f"{bad} was taken")
    try:
        S.resolve(overrides={"mybackend": {"sped": 2}})
    except UserError as e:
        assert "unknown setting 'sped'" in str(e) and "speed, region" in str(e), e
    S.register_section("mybackend", MyBackendSettings)  # again, the same: nothing changes
    assert S.SECTIONS.count("mybackend") == 1
    print("ok")
""")


def test_a_backend_brings_its_own_section_without_editing_settings(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("mybackend: {speed: 3}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", CHILD, str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_the_replicate_section_is_the_backends_own_and_old_files_still_load() -> None:
    from video2dream.backends.replicate import ReplicateSettings

    assert SECTIONS[-1] == "replicate" and isinstance(Settings().replicate, ReplicateSettings)
    s = resolve(saved={"generate": {"steps": 4}, "replicate": {"timeout": 30, "paint_model": "owner/model"}})
    assert (s.replicate.timeout, s.replicate.paint_model) == (30, "owner/model")
    assert list(s.to_dict()) == ["device", "dtype", "backend", "workers", "ray_address", "extract", "interrogate",
                                 "generate", "assemble", "morph", "telephone", "ray", "replicate"]
