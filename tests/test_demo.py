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
