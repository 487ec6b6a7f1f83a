"""The README's screenshots of `raedit app`, one per tab, taken in Debian's Chromium with Playwright.

    python docs/app/screenshots.py [--out docs/app] [--model runs/benchmark/stage2] [--rae runs/benchmark/rae]

Serves `raedit app` from the working directory (where `raedit benchmark` or `raedit demo` left its runs), samples
ten Fashion-MNIST classes, reconstructs four test images and compares CFG 1.0 with 2.0 on the same seeds.
"""

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from raedit.data.fashion_mnist import load_fashion_mnist


def serve(model: str, rae: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "raedit.cli", "app", "--model", model, "--rae", rae,
                               "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("raedit app did not start")


def set_number(page, element_id: str, value) -> None:
    field = page.locator(f"#{element_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def press_and_shoot(page, tab: str, gallery: str, images: int, path: Path) -> None:
    """Press the tab's button, wait for `images` images in `gallery`, then take the whole page."""
    page.locator(f"#{tab}-button").click()
    expect(page.locator(f"#{gallery} img")).to_have_count(images)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=path, full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/app")
    parser.add_argument("--model", default="runs/benchmark/stage2")
    parser.add_argument("--rae", default="runs/benchmark/rae")
    args = parser.parse_args()
    out = Path(args.out)
    uploads = Path(tempfile.mkdtemp())
    images, labels = load_fashion_mnist("test")
    for index in (0, 1, 2, 3):
        Image.fromarray(np.asarray(images[index])).save(uploads / f"test-{index}.png")
    server, url = serve(args.model, args.rae)
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport={"width": 1400, "height": 1050})
            page.set_default_timeout(300_000)
            page.goto(url)
            set_number(page, "sample-num", 40)
            page.locator("#sample-guidance label", has_text="cfg").click()
            set_number(page, "sample-scale", 2.0)
            press_and_shoot(page, "sample", "sample-gallery", 40, out / "sample.png")

            page.get_by_role("tab", name="Reconstruct").click()
            page.locator("#reconstruct-files input[type=file]").set_input_files(sorted(map(str, uploads.iterdir())))
            press_and_shoot(page, "reconstruct", "reconstruct-gallery", 4, out / "reconstruct.png")

            page.get_by_role("tab", name="Compare").click()
            set_number(page, "compare-num", 10)
            page.locator("#compare-b-guidance label", has_text="cfg").click()
            set_number(page, "compare-b-scale", 2.0)
            press_and_shoot(page, "compare", "compare-b-gallery", 10, out / "compare.png")
            browser.close()
    finally:
        server.terminate()
        server.wait()
    print(f"screenshots: {', '.join(str(out / name) for name in ('sample.png', 'reconstruct.png', 'compare.png'))}")


if __name__ == "__main__":
    main()
