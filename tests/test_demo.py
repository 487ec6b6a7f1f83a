"""`raedit demo --quick` from an installed wheel, in a directory outside the checkout; `raedit benchmark`."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from raedit.cli import main

CHECKOUT = Path(__file__).resolve().parents[1]


def install_wheel(tmp_path: Path) -> Path:
    """Build raedit's wheel from a copy of the checkout and install it (without dependencies: the test's own
    environment has them) into a folder of its own; returns that folder."""
    source = tmp_path / "source"
    shutil.copytree(CHECKOUT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("raedit-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True)
    return tmp_path / "site"


def test_quick_demo_runs_from_an_installed_wheel_outside_the_checkout(tmp_path):
    site, elsewhere = install_wheel(tmp_path), tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import raedit; print(raedit.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel's raedit, not the checkout's
    done = subprocess.run([sys.executable, "-m", "raedit.cli", "demo", "--quick", "--out", "demo"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FID" in done.stdout and "total" in done.stdout
    out = elsewhere / "demo"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "quick" and math.isfinite(metrics["fid"]) and metrics["fid"] > 0
    assert metrics["fid_samples"] == 60 and metrics["fid_reference"] == 60
    assert metrics["latent_statistics_count"] == 512  # 256 images and their mirror images
    assert 5 < metrics["reconstruction_psnr_db"] < 60
    assert 0 <= metrics["class_accuracy"] <= 1 and 0.6 < metrics["class_accuracy_real_test"] < 1
    # Both stages ran (at the same time); the RAE the denoiser names got the trained decoder and the statistics.
    assert metrics["seconds"]["both_stages"] >= max(metrics["seconds"]["stage1_decoder"],
                                                    metrics["seconds"]["stage2_diffusion"])
    named, trained = (load_file(str(out / folder / "rae.safetensors")) for folder in ("rae", "stage1/rae"))
    assert "latent_mean" in named and named.keys() == trained.keys()
    assert all(torch.equal(named[key], trained[key]) for key in named)
    with np.load(out / "samples.npz") as samples:
        assert samples["arr_0"].shape == (60, 32, 32, 3) and samples["arr_0"].dtype == np.uint8
        assert np.bincount(samples["labels"]).tolist() == [6] * 10  # class-balanced
    assert Image.open(out / "samples.png").size[0] > 32 * 5
    assert Image.open(out / "reconstructions.png").size[0] > 32


def test_benchmark_records_its_fid_in_the_results_folder(tmp_path, monkeypatch, capsys):
    import raedit.jobs.demo

    monkeypatch.setitem(raedit.jobs.demo.PLANS, "benchmark", raedit.jobs.demo.QUICK)  # the same code path, 2 minutes
    out, results = tmp_path / "bench", tmp_path / "results"
    assert main(["benchmark", "--out", str(out), "--results", str(results)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    record = json.loads((results / "benchmark.json").read_text())
    assert metrics["mode"] == "benchmark" and record["metrics"]["fid"] == metrics["fid"]
    assert f"Generation FID {metrics['fid']:.2f}" in (results / "benchmark.md").read_text()
    assert (results / "benchmark.png").read_bytes() == (out / "samples.png").read_bytes()
    assert [row[0] for row in record["rows"]][-1] == "total" and "total" in capsys.readouterr().out
