"""The review page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium), as a person uses it on a tiny-preset run. Skipped when Chromium is absent, except in CI."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from tests.conftest import cli, make_clip  # noqa: E402

pytestmark = pytest.mark.slow

NEW_PROMPT = "a red boat, at dusk"


def chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    return browser, driver


def open_browser() -> webdriver.Chrome:
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class Served:
    """The studio app on a free loopback port, in a thread of this process."""

    def __init__(self, run: Path) -> None:
        import uvicorn

        from video2dream.studio import free_port
        from video2dream.studio.app import create_app

        self.port = free_port("127.0.0.1")
        self.app = create_app(run)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> Path:
    """3 keyframes at 64x64, 2 steps, with the side-by-side video."""
    chromium()  # skip before the models run
    base = tmp_path_factory.mktemp("studio_browser")
    clip = make_clip(base / "clip.mp4", "testsrc2=size=160x120:rate=25:duration=3",
                     "sine=frequency=440:duration=3",
                     args=("-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"))
    run = base / "run"
    assert cli("run", clip, "-o", run, "--preset", "tiny", "--width", "64", "--height", "64", "--steps", "2",
               "--side-by-side") == 0
    return run


@pytest.fixture
def page(tiny_run: Path) -> Iterator[webdriver.Chrome]:
    driver = open_browser()
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: webdriver.Chrome, test, what: str, timeout: float = 240) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: test(d), message=what)


def pixels(driver: webdriver.Chrome, element_id: str) -> bytes:
    from PIL import Image

    el = driver.find_element("id", element_id)
    return Image.open(io.BytesIO(el.screenshot_as_png)).convert("RGB").tobytes()


def test_fix_one_keyframe_repaint_assemble(page: webdriver.Chrome, tiny_run: Path) -> None:
    run = tiny_run
    prompts_before = (run / "prompts.csv").read_text(encoding="utf-8")
    dreams_before = {p.name: p.read_bytes() for p in (run / "dreams").glob("*.png")}
    by = "css selector"
    with Served(run) as url:
        page.get(url)
        wait(page, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1", "first paint")
        tiles = page.find_elements(by, ".tile")
        assert len(tiles) == 3
        tiles[2].click()
        wait(page, lambda d: d.find_element("id", "kf-name").text == "000003.png", "the third keyframe shown")
        wait(page, lambda d: d.execute_script("const i = document.getElementById('dream-img');"
                                              "return i.complete && i.naturalWidth > 0"), "its dream loaded")
        old_src = page.find_element("id", "dream-img").get_attribute("src")
        before = pixels(page, "dream-img")
        old_prompt = page.find_element("id", "prompt").get_attribute("value")

        box = page.find_element("id", "prompt")
        box.clear()
        box.send_keys(NEW_PROMPT)
        page.find_element("id", "save").click()
        wait(page, lambda d: d.find_element("id", "save-msg").text == "saved", "saved")

        page.find_element("id", "repaint-selected").click()
        wait(page, lambda d: "repaint: done" in d.find_element("id", "job-state").text
             or "failed" in d.find_element("id", "job-state").text, "repaint finished")
        assert "repaint: done" in page.find_element("id", "job-state").text
        wait(page, lambda d: d.execute_script(
            "const i = document.getElementById('dream-img');"
            f"return i.src !== {old_src!r} && i.complete && i.naturalWidth > 0"), "the new dream shown")
        assert pixels(page, "dream-img") != before

        page.find_element("id", "assemble").click()
        wait(page, lambda d: "assemble: done" in d.find_element("id", "job-state").text, "assemble finished")
        wait(page, lambda d: d.find_element("id", "status").text == "everything current", "status current", 30)

    # The file a text editor leaves after the same edit (the cell is quoted: it holds a comma).
    assert prompts_before.count(f'"{old_prompt}"') == 1
    assert (run / "prompts.csv").read_text(encoding="utf-8") == prompts_before.replace(
        f'"{old_prompt}"', f'"{NEW_PROMPT}"')
    after = {p.name: p.read_bytes() for p in (run / "dreams").glob("*.png")}
    assert [n for n in sorted(after) if after[n] != dreams_before[n]] == ["000003.png"]


def test_paint_candidates_and_pick_one(page: webdriver.Chrome, tiny_run: Path, tmp_path: Path) -> None:
    """Issue 22: the keyframe's candidates (generate --variants) painted and picked with a click."""
    from tests.conftest import copy_run

    run = copy_run(tiny_run, tmp_path / "run").root
    by = "css selector"
    with Served(run) as url:
        page.get(url)
        wait(page, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1", "first paint")
        page.find_elements(by, ".tile")[0].click()
        wait(page, lambda d: d.find_element("id", "kf-name").text == "000001.png", "the first keyframe shown")
        assert page.find_element("id", "cand-title").text == "no candidates"
        page.find_element("id", "paint-variants").click()
        wait(page, lambda d: "variants: done" in d.find_element("id", "job-state").text
             or "failed" in d.find_element("id", "job-state").text, "candidates painted")
        assert "variants: done" in page.find_element("id", "job-state").text
        wait(page, lambda d: len(d.find_elements(by, "#candidates .candidate")) == 4, "four candidates shown")
        chosen = (run / "variants" / "000001_02.png").read_bytes()
        page.find_elements(by, "#candidates button.pick")[1].click()
        wait(page, lambda d: d.find_element("id", "pick-msg").text == "picked 2", "picked")
        wait(page, lambda d: len(d.find_elements(by, "#candidates .candidate")) == 3, "the picked one moved")
    assert (run / "dreams" / "000001.png").read_bytes() == chosen
    from video2dream.runfolder import RunFolder
    from video2dream.settings import resolve
    from video2dream.stages import generate

    assert generate.status_data(RunFolder(run), resolve(RunFolder(run).saved_settings()))["state"] == "current"
