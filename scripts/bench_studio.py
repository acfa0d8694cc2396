"""The review page's speed on a long run, and its screenshot.

  python scripts/bench_studio.py measure [--keyframes 600]   # a fake run of small PNGs: API, first paint, RSS
  python scripts/bench_studio.py shot RUN docs/studio_tiny.png  # headless Chromium's picture of RUN's page

measure: the time of the keyframes call (cold: every dream's key checked; warm), the time from opening
the page to its first paint with every tile (Chromium, via Selenium), and the idle server's RSS (a
`video2dream studio` process, before and after serving the page)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fake_run(root: Path, count: int) -> None:
    """count keyframes at 1 fps: 64x64 frames and dreams, prompts.csv, the records status reads."""
    from PIL import Image

    for folder in ("frames", "dreams"):
        (root / folder).mkdir(parents=True)
    names = [f"{k:06d}.png" for k in range(1, count + 1)]
    for k, name in enumerate(names):
        Image.new("RGB", (64, 64), (k % 256, (3 * k) % 256, 90)).save(root / "frames" / name)
        Image.new("RGB", (64, 64), (90, k % 256, (7 * k) % 256)).save(root / "dreams" / name)
    rows = "".join(f"{n},{k:.6f},tick\n" for k, n in enumerate(names))
    (root / "frames.csv").write_text("filename,time,kind\n" + rows)
    (root / "prompts.csv").write_text("filename,prompt,time\n" + "".join(
        f"{n},\"a prompt for moment {k}, with words\",{k:.6f}\n" for k, n in enumerate(names)))
    (root / "settings.yaml").write_text("generate:\n  width: 64\n  height: 64\n")
    (root / ".video2dream").mkdir()
    (root / ".video2dream" / "extract.json").write_text(json.dumps(
        {"frames": count, "fps": 1.0, "width": 64, "height": 64, "key": "fake"}))


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver") or ""), options=options)


def serve(run: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "video2dream", "studio", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()  # "video2dream studio: URL"
    url = line.split(": ", 1)[1].strip()
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "static/style.css").read()
            break
        except OSError:
            time.sleep(0.1)
    return proc, url


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_ready(driver, timeout: float = 120) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, 0.05).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1")


def measure(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t = time.perf_counter()
        fake_run(run, count)
        print(f"fake run of {count} keyframes made in {time.perf_counter() - t:.1f} s")
        proc, url = serve(run)
        try:
            idle = rss_mib(proc.pid)
            for label in ("cold", "warm"):
                t = time.perf_counter()
                data = json.loads(urllib.request.urlopen(url + "api/keyframes").read())
                print(f"GET /api/keyframes ({label}): {time.perf_counter() - t:.2f} s, {len(data['keyframes'])} rows")
            driver = browser()
            try:
                for label in ("first visit (thumbnails made)", "second visit (thumbnails cached)"):
                    t = time.perf_counter()
                    driver.get(url)
                    wait_ready(driver)
                    ready = time.perf_counter() - t
                    tiles = driver.execute_script("return document.querySelectorAll('.tile').length")
                    print(f"page usable ({label}): {ready:.2f} s to first paint with {tiles} tiles")
            finally:
                driver.quit()
            time.sleep(1)
            print(f"server RSS: {idle:.0f} MiB idle at start, {rss_mib(proc.pid):.0f} MiB after serving the page")
        finally:
            proc.terminate()
            proc.wait()


def shot(run: Path, out: Path) -> None:
    proc, url = serve(run)
    try:
        driver = browser()
        try:
            driver.get(url)
            wait_ready(driver)
            driver.find_elements("css selector", ".tile")[-1].click()
            time.sleep(2)  # the panel's pictures and the waveform
            driver.execute_script("document.getElementById('run-name').textContent += ' (tiny preset: random models)'")
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
    finally:
        proc.terminate()
        proc.wait()
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--keyframes", type=int, default=600)
    s = sub.add_parser("shot")
    s.add_argument("run", type=Path)
    s.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.what == "measure":
        measure(args.keyframes)
    else:
        shot(args.run, args.out)


if __name__ == "__main__":
    main()
