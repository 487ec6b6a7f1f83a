"""`raedit app` in a real browser: Debian's Chromium driven by Playwright, against the app served by the `raedit`
command on tiny models of the quick demo's kind (an untrained decoder, a random DiT^DH). `make install` installs
both; Playwright's own browser download is not used."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from stage2_helpers import make_rae_dir, save_model

from raedit.cli import main

TIMEOUT_MS = 120_000  # generous: the suite shares 2 cores with the served app


def chromium_executable() -> str:
    found = os.environ.get("RAEDIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no Chromium: `make install` installs Debian's chromium package (or set RAEDIT_CHROMIUM)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on a tiny run (Fashion-MNIST classes) and its RAE, served by `raedit app` from their folder."""
    root = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    make_rae_dir(root / "runs" / "demo" / "rae", stats=(torch.randn(112, 2, 2), torch.rand(112, 2, 2) + 0.5))
    save_model(root / "runs" / "demo" / "stage2" / "model", Path("runs/demo/rae"))
    (root / "runs" / "demo" / "stage2" / "config.yaml").write_text("data: {name: fashion-mnist}\n")
    save_model(root / "models" / "imagenet" / "denoiser", Path("runs/demo/rae"), num_classes=1000)
    port = free_port()
    log = (root / "app.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "raedit.cli", "app", "--port", str(port)], cwd=root,
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"raedit app did not start: {(root / 'app.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield {"url": url, "root": root}
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=chromium_executable())
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served["url"])
    page.wait_for_selector("#sample-button")
    yield page
    page.close()


def set_number(page, element_id: str, value: int | float) -> None:
    field = page.locator(f"#{element_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def choose_classes(page, element_id: str, names: list[str]) -> None:
    classes = page.locator(f"#{element_id}")
    classes.locator("[title=Clear]").click()
    for name in names:
        classes.locator("input").fill(name.split(": ")[1])
        page.get_by_role("option", name=name).click()
    page.keyboard.press("Escape")


def test_sample_a_class_and_download_what_raedit_sample_writes(page, served, tmp_path, monkeypatch):
    choose_classes(page, "sample-classes", ["8: Bag"])
    set_number(page, "sample-num", 3)
    set_number(page, "sample-steps", 4)
    page.locator("#sample-button").click()
    expect(page.locator("#sample-gallery img")).to_have_count(3)
    expect(page.locator("#sample-status")).to_contain_text("3 images from runs/demo/stage2, seed 0")
    assert page.locator("#sample-gallery").inner_text().count("Bag") == 3  # each image captioned by its class
    command = page.locator("#sample-command textarea").input_value()
    assert command == "raedit sample --ckpt runs/demo/stage2 --num 3 --classes 8 --steps 4"
    with page.expect_download() as download:
        page.locator("#sample-files a[download='samples.npz']").click()
    downloaded = tmp_path / "downloaded.npz"
    download.value.save_as(downloaded)
    monkeypatch.chdir(served["root"])
    again = tmp_path / "again.npz"
    assert main([*shlex.split(command)[1:], "--out", str(again), "--grid", ""]) == 0
    with np.load(downloaded) as shown, np.load(again) as written:
        np.testing.assert_array_equal(shown["arr_0"], written["arr_0"])
        assert shown["labels"].tolist() == written["labels"].tolist() == [8, 8, 8]


def test_upload_a_picture_and_see_its_reconstruction_then_a_broken_file_and_see_the_error(page, served, tmp_path):
    picture = tmp_path / "stripes.png"
    Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))).convert("RGB").save(picture)
    page.get_by_role("tab", name="Reconstruct").click()
    page.locator("#reconstruct-files input[type=file]").set_input_files([str(picture)])
    page.locator("#reconstruct-button").click()
    expect(page.locator("#reconstruct-gallery img")).to_have_count(1)
    expect(page.locator("#reconstruct-status")).to_contain_text("1 of 1 images reconstructed")
    caption = page.locator("#reconstruct-gallery").inner_text()
    assert "stripes.png: PSNR" in caption and "dB, SSIM" in caption
    assert "stripes.png" in page.locator("#reconstruct-table").inner_text()

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    page.locator("#reconstruct-files [aria-label='Clear']").first.click()
    page.locator("#reconstruct-files input[type=file]").set_input_files([str(broken)])
    page.locator("#reconstruct-button").click()
    expect(page.locator("#reconstruct-status")).to_contain_text("broken.png is not an image that can be read")
    expect(page.locator("#reconstruct-gallery img")).to_have_count(0)


def test_a_model_that_does_not_load_is_a_message_and_the_app_keeps_running(page, served):
    model = page.locator("#sample-model input")
    model.fill("runs/missing")
    model.press("Enter")
    expect(page.locator("#sample-status")).to_contain_text("runs/missing is neither a saved denoiser")
    page.locator("#sample-button").click()
    expect(page.locator("#sample-status")).to_contain_text("Error")
    page.reload()
    page.wait_for_selector("#sample-button")
    set_number(page, "sample-num", 2)
    set_number(page, "sample-steps", 2)
    page.locator("#sample-button").click()
    expect(page.locator("#sample-gallery img")).to_have_count(2)


def test_compare_two_guidance_scales_on_the_same_seeds(page, served):
    page.get_by_role("tab", name="Compare").click()
    choose_classes(page, "compare-classes", ["0: T-shirt/top", "9: Ankle boot"])
    set_number(page, "compare-num", 2)
    set_number(page, "compare-steps", 3)
    page.locator("#compare-b-guidance label", has_text="cfg").click()
    set_number(page, "compare-b-scale", 4)
    page.locator("#compare-button").click()
    expect(page.locator("#compare-a-gallery img")).to_have_count(2)
    expect(page.locator("#compare-b-gallery img")).to_have_count(2)
    assert page.locator("#compare-a-command textarea").input_value() == (
        "raedit sample --ckpt runs/demo/stage2 --num 2 --classes 0 9 --steps 3")
    assert page.locator("#compare-b-command textarea").input_value() == (
        "raedit sample --ckpt runs/demo/stage2 --num 2 --classes 0 9 --steps 3 --cfg 4.0")


def test_a_thousand_class_model_offers_the_imagenet_classes_by_search(page, served):
    model = page.locator("#sample-model input")
    model.fill("models/imagenet/denoiser")
    model.press("Enter")
    classes = page.locator("#sample-classes")
    expect(classes).to_contain_text("0: tench")
    classes.locator("[title=Clear]").click()
    classes.locator("input").fill("espres")
    page.get_by_role("option", name="967: espresso").click()
    page.keyboard.press("Escape")
    set_number(page, "sample-num", 2)
    set_number(page, "sample-steps", 2)
    page.locator("#sample-button").click()
    expect(page.locator("#sample-gallery img")).to_have_count(2)
    assert page.locator("#sample-gallery").inner_text().count("espresso") == 2
    assert page.locator("#sample-command textarea").input_value() == (
        "raedit sample --ckpt models/imagenet/denoiser --num 2 --classes 967 --steps 2")
