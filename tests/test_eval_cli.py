"""`raedit eval` end to end on Fashion-MNIST (few images), the reference cache, and one-line errors."""

import json
import logging

import numpy as np
import pytest

import raedit.cli as cli
from raedit.data.fashion_mnist import load_fashion_mnist
from raedit.eval.reference import ReferenceStats


def test_eval_against_fashion_mnist_then_from_the_cache(tmp_path, capsys, caplog):
    images, _ = load_fashion_mnist("test")
    np.savez(tmp_path / "samples.npz", arr_0=np.repeat(images[100:112, :, :, None], 3, axis=3))
    common = ["eval", "--samples", str(tmp_path / "samples.npz"), "--ref-limit", "12",
              "--cache-dir", str(tmp_path / "cache")]
    with caplog.at_level(logging.WARNING):
        assert cli.main([*common, "--ref", "fashion-mnist-test", "--metrics", "fid,sfid,pr,is,fd",
                         "--fd-encoder", "effnet-lite0", "--json", str(tmp_path / "first.json")]) == 0
    assert "12 samples for 2048-dimensional features" in caplog.text
    table = capsys.readouterr().out
    assert "fid" in table and "unavailable" in table
    first = json.loads((tmp_path / "first.json").read_text())
    metrics = first["metrics"]
    assert metrics["fid"] > 1 and metrics["sfid"] > 1 and metrics["fd_effnet-lite0"] > 0
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1
    assert metrics["is"] == "unavailable" and first["num_reference"] == 12

    (cached,) = (tmp_path / "cache").glob("*.npz")
    stats = ReferenceStats.load(cached)
    assert stats.count == 12 and stats.pool_features.shape == (12, 2048) and "effnet-lite0" in stats.encoders
    # the cached statistics file is itself a valid reference and gives the same FID
    assert cli.main([*common, "--ref", str(cached), "--metrics", "fid", "--json", str(tmp_path / "second.json")]) == 0
    second = json.loads((tmp_path / "second.json").read_text())
    assert second["metrics"]["fid"] == pytest.approx(metrics["fid"], rel=1e-6)


def test_bad_samples_give_a_one_line_error(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    assert cli.main(["eval", "--samples", str(tmp_path / "bad.npz"), "--ref", "fashion-mnist-test"]) == 2
    assert capsys.readouterr().err.strip() == f"raedit: error: {tmp_path / 'bad.npz'}: no array 'arr_0' (found: images)"
    assert cli.main(["eval", "--samples", str(tmp_path / "bad.npz"), "--ref", "x", "--metrics", "kid"]) == 2
    assert "unknown metric(s) kid" in capsys.readouterr().err


def test_eval_recon_takes_overrides_without_a_config_file(capsys):
    assert cli.main(["eval-recon", "num_images=2", "rfid=false"]) == 2
    assert "eval-recon needs `autoencoder`" in capsys.readouterr().err
    assert cli.main(["eval-recon", "num_image=2"]) == 2
    assert "unknown config key 'num_image'" in capsys.readouterr().err
