"""Inception Score on known distributions, the logits-file loader, metric names."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from raedit.core.errors import RaeditError
from raedit.eval.evaluate import inception_score, parse_metrics
from raedit.eval.inception import LogitsHead


def test_uniform_predictions_score_one():
    assert inception_score(np.zeros((40, 1008))) == pytest.approx(1.0)


def test_confident_distinct_predictions_score_the_split_size():
    logits = np.full((20, 1008), -1e3)
    logits[np.arange(20), np.arange(20)] = 0.0  # sample i is surely class i
    assert inception_score(logits, splits=2) == pytest.approx(10.0)
    assert inception_score(logits, splits=10) == pytest.approx(2.0)


def test_inception_score_needs_enough_samples():
    with pytest.raises(RaeditError, match="at least 10 samples"):
        inception_score(np.zeros((5, 1008)))


def test_logits_head_from_files(tmp_path):
    weight, bias = torch.randn(1008, 2048), torch.randn(1008)
    save_file({"fc.weight": weight, "fc.bias": bias, "other": torch.zeros(3)}, str(tmp_path / "fc.safetensors"))
    head = LogitsHead.from_file(tmp_path / "fc.safetensors")
    pool = torch.randn(2, 2048)
    torch.testing.assert_close(head(pool), pool.double() @ weight.double().T + bias.double())
    np.save(tmp_path / "w.npy", weight.T.numpy())  # the TF graph stores 2048 x 1008
    torch.testing.assert_close(LogitsHead.from_file(tmp_path / "w.npy")(pool), pool.double() @ weight.double().T)
    np.savez(tmp_path / "bad.npz", w=np.zeros((1000, 2048), np.float32))
    with pytest.raises(RaeditError, match="expected one 1008 x 2048 logits matrix"):
        LogitsHead.from_file(tmp_path / "bad.npz")


def test_metric_names():
    assert parse_metrics("fid, sfid,pr,fid") == ("fid", "sfid", "pr")
    with pytest.raises(RaeditError, match="unknown metric\\(s\\) kid"):
        parse_metrics("fid,kid")
