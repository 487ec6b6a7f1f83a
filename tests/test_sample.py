import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from stage2_helpers import make_rae_dir, save_model
from torchrun import run_torchrun_code

from raedit.cli import main
from raedit.core.dataclass_options import add_options, from_options
from raedit.core.errors import RaeditError
from raedit.jobs.sample import SampleConfig, generate, sample_labels


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sample")
    torch.manual_seed(0)
    rae = make_rae_dir(root / "rae", stats=(torch.randn(112, 2, 2), torch.rand(112, 2, 2) + 0.5))
    return {"rae": rae, "main": save_model(root / "main", rae), "guide": save_model(root / "guide", rae, seed=1),
            "rae64": make_rae_dir(root / "rae64", input_size=64),
            "other": save_model(root / "other", rae, latent_shape=(112, 4, 4)), "root": root}


def run(models, tmp_path: Path, name: str, **settings) -> np.lib.npyio.NpzFile:
    config = SampleConfig(ckpt=str(models["main"]), out=str(tmp_path / f"{name}.npz"),
                          grid=str(tmp_path / f"{name}.png"), **{"num": 10, "steps": 4, **settings})
    generate(config)
    return np.load(tmp_path / f"{name}.npz")


def test_equal_label_sampling_splits_the_classes_evenly():
    labels = sample_labels(100, list(range(10)), "equal", seed=0)
    assert Counter(labels.tolist()) == {c: 10 for c in range(10)}
    assert Counter(sample_labels(7, [3, 5], "equal", 0).tolist()) == {3: 4, 5: 3}
    random = sample_labels(1000, list(range(10)), "random", seed=4)
    assert torch.equal(random, sample_labels(1000, list(range(10)), "random", seed=4))
    assert not torch.equal(random, sample_labels(1000, list(range(10)), "random", seed=5))
    assert set(random.tolist()) == set(range(10)) and max(Counter(random.tolist()).values()) > 100


def test_npz_is_adm_style_and_the_grid_has_a_column_per_class(models, tmp_path):
    data = run(models, tmp_path, "a", num=20)
    assert sorted(data.files) == ["arr_0", "labels"]
    assert data["arr_0"].shape == (20, 32, 32, 3) and data["arr_0"].dtype == np.uint8
    assert data["labels"].tolist() == [i % 10 for i in range(20)]
    assert data["arr_0"].std() > 5  # images, not a constant
    grid = Image.open(tmp_path / "a.png")
    assert grid.size == (10 * 34 + 2, 2 * 34 + 2)  # 10 columns (classes) x 2 rows, 2 px padding


def test_floats_become_uint8_by_truncation_as_the_official_sampler(models, tmp_path):
    from raedit.core.images import quantize

    values = torch.tensor([0.0, 0.3, 0.999, 1.5, -0.2, 128 / 255])
    assert quantize(values).tolist() == (values.clamp(0, 1) * 255).to(torch.uint8).tolist() == [0, 76, 254, 255, 0, 128]
    assert quantize(values, "nearest").tolist() == [0, 76, 255, 255, 0, 128]
    levels = torch.arange(256, dtype=torch.uint8)
    for rounding in ("truncate", "nearest"):  # a uint8 image / 255 comes back exactly either way
        assert torch.equal(quantize(levels.float() / 255, rounding), levels)
    truncated, nearest = run(models, tmp_path, "t")["arr_0"], run(models, tmp_path, "n", rounding="nearest")["arr_0"]
    difference = nearest.astype(int) - truncated.astype(int)
    assert set(np.unique(difference)) <= {0, 1} and 0.3 < difference.mean() < 0.7  # the same images, half a level


@pytest.mark.parametrize("sampler", ["euler", "sde"])
def test_samples_do_not_depend_on_the_batch_size(models, tmp_path, sampler):
    three = run(models, tmp_path, "three", batch_size=3, sampler=sampler, label_sampling="random")
    five = run(models, tmp_path, "five", batch_size=5, sampler=sampler, label_sampling="random")
    np.testing.assert_array_equal(three["labels"], five["labels"])
    if sampler == "euler":
        np.testing.assert_array_equal(three["arr_0"], five["arr_0"])
    else:  # the same noise; matmul kernels that differ with the batch size may round 1 pixel in 10^4 otherwise
        difference = np.abs(three["arr_0"].astype(int) - five["arr_0"])
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
    other_seed = run(models, tmp_path, "seed", batch_size=5, sampler=sampler, label_sampling="random", seed=1)
    assert np.abs(other_seed["arr_0"].astype(int) - five["arr_0"]).mean() > 1


def test_guidance_changes_the_samples_and_bf16_stays_close(models, tmp_path):
    plain = run(models, tmp_path, "plain")["arr_0"].astype(int)
    cfg = run(models, tmp_path, "cfg", cfg=12.0, cfg_interval=(0.0, 1.0))["arr_0"].astype(int)
    ag = run(models, tmp_path, "ag", guide_ckpt=str(models["guide"]), ag=3.0)["arr_0"].astype(int)
    ag_one = run(models, tmp_path, "ag1", guide_ckpt=str(models["guide"]), ag=1.0)["arr_0"].astype(int)
    assert np.abs(cfg - plain).mean() > 1 and np.abs(ag - plain).mean() > 1
    np.testing.assert_array_equal(ag_one, plain)  # w = 1: v = v_main
    empty_interval = run(models, tmp_path, "cfg0", cfg=4.0, cfg_interval=(0.0, 0.0))["arr_0"].astype(int)
    np.testing.assert_array_equal(empty_interval, plain)  # t = 0 is never a grid point that is evaluated
    bf16 = run(models, tmp_path, "bf16", bf16=True)["arr_0"].astype(int)
    assert np.abs(bf16 - plain).mean() < 3


def test_compiled_sampling_and_each_attention_kernel_give_the_eager_images(models, tmp_path):
    """The same uint8 images up to float rounding: at most 1 level apart, and rarely that."""
    settings = {"cfg": 4.0, "cfg_interval": (0.2, 1.0)}
    eager = run(models, tmp_path, "eager", **settings)["arr_0"].astype(int)
    for name, options in [("compiled", {"compile": "model"}), ("math", {"attention": "math"})]:
        other = run(models, tmp_path, name, **settings, **options)["arr_0"].astype(int)
        assert np.abs(other - eager).max() <= 1 and (other != eager).mean() < 0.01, name


def test_two_ranks_write_the_same_samples_as_one(models, tmp_path):
    result = run_torchrun_code(tmp_path, f"""
        from raedit.jobs.sample import SampleConfig, generate
        generate(SampleConfig(ckpt={str(models['main'])!r}, num=7, steps=3, sampler="sde", batch_size=2,
                              out={str(tmp_path / 'two.npz')!r}, grid=None))
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    one = run(models, tmp_path, "one", num=7, steps=3, sampler="sde", batch_size=4)
    two = np.load(tmp_path / "two.npz")
    np.testing.assert_array_equal(one["labels"], two["labels"])
    # same noise per index; only the kernels' thread count differs (1 vs 2 threads): at most 1 level of 255
    assert np.abs(one["arr_0"].astype(int) - two["arr_0"]).max() <= 1
    assert sorted(p.name for p in tmp_path.iterdir() if "part" in p.name) == []  # parts cleaned up


def test_bad_inputs_are_one_line_errors(models, tmp_path):
    with pytest.raises(RaeditError, match=r"unknown class ids \[10, -1\]: the model has classes 0..9"):
        run(models, tmp_path, "x", classes=[3, 10, -1])
    with pytest.raises(RaeditError, match=r"trained on latents \(112, 2, 2\), but the RAE .* gives \(112, 4, 4\)"):
        run(models, tmp_path, "x", rae=str(models["rae64"]))
    with pytest.raises(RaeditError, match="not the same latent space"):
        run(models, tmp_path, "x", guide_ckpt=str(models["other"]), ag=1.5)
    with pytest.raises(RaeditError, match="AutoGuidance goes alone"):
        run(models, tmp_path, "x", guide_ckpt=str(models["guide"]), ag=1.5, cfg=2.0)
    with pytest.raises(RaeditError, match="AutoGuidance needs a guide model"):
        run(models, tmp_path, "x", ag=1.5)
    with pytest.raises(RaeditError, match="no internal-guidance base head"):
        run(models, tmp_path, "x", ig=1.5)
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(RaeditError, match="neither a saved denoiser"):
        generate(SampleConfig(ckpt=str(tmp_path)))


def test_sample_command(models, tmp_path, capsys):
    out, grid = tmp_path / "s.npz", tmp_path / "g.png"
    assert main(["sample", "--ckpt", str(models["main"]), "--num", "4", "--steps", "2", "--sampler", "heun",
                 "--out", str(out), "--grid", str(grid), "--classes", "2", "7", "--grid-images", "2",
                 "--t-end", "0.001"]) == 0
    assert np.load(out)["labels"].tolist() == [2, 7, 2, 7]
    assert Image.open(grid).size == (2 * 34 + 2, 34 + 2)  # --grid-images 2: one row of two
    assert main(["sample", "--ckpt", str(models["main"]), "--classes", "12", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown class ids [12]" in err[0]


def test_every_sample_setting_is_an_option_with_the_configs_default():
    parser = argparse.ArgumentParser()
    add_options(parser, SampleConfig)
    assert from_options(SampleConfig, parser.parse_args(["--ckpt", "x"])) == SampleConfig(ckpt="x")
    given = parser.parse_args(["--ckpt", "x", "--grid", "", "--cfg-interval", "0.1", "0.7", "--bf16", "--t-end",
                               "0.001", "--classes", "1", "4", "--sampler", "heun", "--grid-images", "9"])
    assert from_options(SampleConfig, given) == SampleConfig(ckpt="x", grid=None, cfg_interval=(0.1, 0.7), bf16=True,
                                                             t_end=0.001, classes=[1, 4], sampler="heun",
                                                             grid_images=9)
    with pytest.raises(SystemExit):  # argparse refuses a sampler the library does not have
        parser.parse_args(["--ckpt", "x", "--sampler", "dpm"])
