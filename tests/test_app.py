"""`raedit app` without a browser: the models it finds, the class names it offers, the command it shows, and the
work of its tabs (tests/test_app_browser.py drives the page itself)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from stage2_helpers import make_rae_dir, save_model

from raedit.app.actions import SampleRequest, load_rae, model_class_names, reconstruct_files, run_sample
from raedit.app.catalog import find_models
from raedit.cli import main
from raedit.core.dataclass_options import add_options, from_options, to_options
from raedit.core.errors import RaeditError
from raedit.data.class_names import class_names, imagenet_class_names
from raedit.data.fashion_mnist import load_fashion_mnist
from raedit.eval.similarity import psnr
from raedit.jobs.sample import SampleConfig


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    rae = make_rae_dir(root / "runs" / "demo" / "rae", stats=(torch.randn(112, 2, 2), torch.rand(112, 2, 2) + 0.5))
    run = root / "runs" / "demo" / "stage2"
    save_model(run / "model", rae)
    (run / "config.yaml").write_text("data: {name: fashion-mnist, split: train, resolution: 32}\n")
    (run / "checkpoints" / "step-00000004").mkdir(parents=True)
    save_model(run / "checkpoints" / "step-00000004", rae)  # a checkpoint of the run: not offered on its own
    imported = save_model(root / "models" / "imagenet" / "denoiser", rae, num_classes=1000)
    return {"root": root, "rae": rae, "run": run, "imported": imported}


def test_the_catalog_offers_runs_saved_models_and_raes_given_ones_first(models):
    root = models["root"]
    catalog = find_models([str(root / "mine")], [], [root / "runs", root / "models", root / "absent"])
    assert catalog.denoisers == [str(root / "mine"), str(models["run"]), str(models["imported"])]
    assert catalog.autoencoders == [str(models["rae"])]


def test_class_names_come_from_the_run_or_the_number_of_classes(models, tmp_path):
    assert model_class_names(str(models["run"]))[8] == "Bag"
    names = model_class_names(str(models["imported"]))
    assert len(names) == 1000 and names[281] == "tabby cat" and names[967] == "espresso"
    assert len(set(imagenet_class_names())) == 1000
    folder = tmp_path / "folder"
    for name in ("cats", "dogs", "owls"):
        (folder / "train" / name).mkdir(parents=True)
    (tmp_path / "config.yaml").write_text(f"data: {{name: folder, path: {folder / 'train'}}}\n")
    assert class_names(3, tmp_path) == ["cats", "dogs", "owls"]
    assert class_names(3) == ["class 0", "class 1", "class 2"]


def test_options_give_back_the_config():
    parser = argparse.ArgumentParser()
    add_options(parser, SampleConfig)
    for config in (SampleConfig(ckpt="a b"), SampleConfig(ckpt="x", grid=None, cfg=1.5, cfg_interval=(0.1, 0.75),
                                                          classes=[3, 1], bf16=True, sampler="heun", seed=7)):
        assert from_options(SampleConfig, parser.parse_args(to_options(config))) == config
    assert to_options(SampleConfig(ckpt="x", num=4)) == ["--ckpt", "x", "--num", "4"]


def test_the_shown_command_writes_the_samples_shown(models, tmp_path, monkeypatch):
    monkeypatch.chdir(models["root"])
    shares = []
    request = SampleRequest("runs/demo/stage2", [8, 2], num=4, steps=3, guidance="cfg", scale=2.0,
                            interval=(0.0, 0.7), seed=5)
    result = run_sample(request, tmp_path / "page", shares.append)
    assert [name for _, name in result.images] == ["Bag", "Pullover", "Bag", "Pullover"]
    assert shares[-1] == 1.0 and shares == sorted(shares) and len(shares) == 3  # one batch of 3 Euler steps
    assert result.command == ("raedit sample --ckpt runs/demo/stage2 --num 4 --classes 8 2 --steps 3 --cfg 2.0 "
                              "--cfg-interval 0.0 0.7 --seed 5")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").symlink_to(models["root"] / "runs")
    assert main(shlex.split(result.command)[1:]) == 0
    shown, again = np.load(result.npz), np.load(tmp_path / "samples.npz")
    np.testing.assert_array_equal(shown["arr_0"], again["arr_0"])
    np.testing.assert_array_equal(shown["labels"], again["labels"])


@pytest.mark.parametrize("changes, message", [
    ({"classes": []}, "choose at least one class"),
    ({"guidance": "autoguidance"}, "AutoGuidance needs a guide model"),
    ({"model": ""}, "choose a model"),
])
def test_incomplete_requests_are_one_line_errors(models, tmp_path, changes, message):
    request = SampleRequest(**{"model": str(models["run"]), "classes": [0], **changes})
    with pytest.raises(RaeditError, match=message):
        run_sample(request, tmp_path)


def test_reconstruction_of_uploads_with_psnr_and_a_line_for_each_broken_file(models, tmp_path):
    images, _ = load_fashion_mnist("test")
    picture = tmp_path / "shoe.png"
    Image.fromarray(np.asarray(images[0])).save(picture)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    rae = load_rae(str(models["rae"]))
    results, problems = reconstruct_files(rae, [str(picture), str(broken)])
    assert problems == ["broken.png is not an image that can be read"]
    (result,) = results
    assert result.original.shape == result.reconstruction.shape == (32, 32, 3)
    as_float = [torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
                for image in (result.reconstruction, result.original)]
    assert result.psnr == pytest.approx(float(psnr(*as_float)[0]), abs=0.05)  # from the unrounded images
    with pytest.raises(RaeditError, match="upload at least one image"):
        reconstruct_files(rae, [])
    with pytest.raises(RaeditError, match="is not a saved RAE"):
        load_rae(str(tmp_path))


def test_each_guidance_becomes_the_sample_options_of_its_kind(tmp_path):
    base = dict(model="m", classes=[1], scale=1.42, interval=(0.1, 0.9))
    assert SampleRequest(**base).config(tmp_path) == SampleConfig(
        ckpt="m", num=10, classes=[1], steps=25, out=str(tmp_path / "samples.npz"), grid=str(tmp_path / "grid.png"))
    cfg = SampleRequest(**base, guidance="cfg").config(tmp_path)
    assert (cfg.cfg, cfg.cfg_interval, cfg.ag, cfg.guide_ckpt) == (1.42, (0.1, 0.9), 1.0, None)
    autoguided = SampleRequest(**base, guidance="autoguidance", guide="small").config(tmp_path)
    assert (autoguided.cfg, autoguided.cfg_interval, autoguided.ag, autoguided.guide_ckpt) == (
        1.0, (0.0, 1.0), 1.42, "small")
