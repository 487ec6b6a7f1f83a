import json
import math

import numpy as np
from PIL import Image

from raedit.cli import main


def test_quick_demo_runs_every_stage_and_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FID" in printed and "total" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "quick" and math.isfinite(metrics["fid"]) and metrics["fid"] > 0
    assert metrics["fid_samples"] == 60 and metrics["fid_reference"] == 60
    assert metrics["latent_statistics_count"] == 512  # 256 images and their mirror images
    assert 5 < metrics["reconstruction_psnr_db"] < 60
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
