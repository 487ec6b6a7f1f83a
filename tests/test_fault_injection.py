"""Every file raedit reads, corrupted every way we could think of, gives one line naming the file, exit code 2, no
traceback, and no output written: empty, truncated at several offsets, bytes flipped in the header and in the
data, wrong shapes and dtypes, missing and extra keys, NaN values.

The corruptions of each file are tried through the command that reads it; `pytest -s -p no:xdist` on this file
prints how many were tried."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from safetensors.torch import save as save_safetensors
from stage2_helpers import cache_stats, make_setup

from raedit.cli import main
from raedit.diffusion.denoiser_io import DenoiserInfo, save_denoiser
from raedit.models import build_model, model_config

ByteCorruption = Callable[[bytes], bytes]


def truncated_at(fraction: float) -> ByteCorruption:
    return lambda data: data[: max(int(len(data) * fraction), 1) if fraction > 0 else 0]


def flipped_at(fraction: float) -> ByteCorruption:
    def flip(data: bytes) -> bytes:
        position = min(int(len(data) * fraction), len(data) - 1)
        return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]
    return flip


BYTE_CORRUPTIONS: dict[str, ByteCorruption] = {
    "empty": truncated_at(0), "1 byte": lambda data: data[:1], "truncated 8 bytes": lambda data: data[:8],
    "truncated at 10%": truncated_at(0.1), "truncated at 50%": truncated_at(0.5),
    "one byte short": lambda data: data[:-1], "header byte flipped": flipped_at(0.0005),
    "header length flipped": flipped_at(0.0), "garbage": lambda data: b"\x00\xffnot a file" * 7,
}
JSON_CORRUPTIONS: dict[str, ByteCorruption] = {
    "empty": truncated_at(0), "truncated at 50%": truncated_at(0.5), "not JSON": lambda data: b"{not json",
    "a list": lambda data: b"[1, 2]", "flipped brace": flipped_at(0.0),
}


def corrupted_bytes(original: bytes, json_file: bool = False) -> dict[str, bytes]:
    """The file's bytes, corrupted each way for its kind."""
    corruptions = JSON_CORRUPTIONS if json_file else BYTE_CORRUPTIONS
    return {label: corrupt(original) for label, corrupt in corruptions.items()}


def corrupted_tensors(tensors: dict[str, torch.Tensor], key: str, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """A safetensors file's content corrupted around `key` (all but the `skip` kinds), as file bytes."""
    value = tensors[key]
    nan, inf = value.clone().float(), value.clone().float()
    nan.view(-1)[0], inf.view(-1)[-1] = float("nan"), float("inf")
    variants = {
        "missing key": {k: v for k, v in tensors.items() if k != key},
        "extra key": {**tensors, "surprise.weight": torch.zeros(2)},
        "wrong shape": {**tensors, key: torch.zeros(*value.shape[:-1], value.shape[-1] + 1)},
        "wrong dtype": {**tensors, key: value.to(torch.int64)},
        "NaN": {**tensors, key: nan.to(value.dtype)},
        "inf": {**tensors, key: inf.to(value.dtype)},
    }
    return {f"{key}: {label}": save_safetensors({k: v.contiguous() for k, v in content.items()})
            for label, content in variants.items() if label not in skip}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """A saved RAE (with statistics), a saved denoiser naming it, and a finished latent cache."""
    root = tmp_path_factory.mktemp("faults")
    setup = make_setup(root, count=16)
    torch.manual_seed(0)
    model = build_model(model_config("ditdh-s", (112, 2, 2), depth=1, width=64, num_heads=2, head_depth=1,
                                     head_width=128, head_num_heads=2, num_classes=10))
    info = DenoiserInfo(model.config, 0.5, str(setup["rae"]), "effnet-lite0")
    save_denoiser(root / "denoiser", model.state_dict(), info)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "image.png")
    yield {**setup, "denoiser": root / "denoiser", "root": root}
    print(f"\ncorruptions tried: {len(TRIED)}")  # `pytest -s -p no:xdist tests/test_fault_injection.py`


TRIED: list[str] = []


def assert_one_line_error(capsys, argv: list[str], what: str, names: Path, *, outputs: tuple[Path, ...] = ()) -> None:
    """`raedit ARGV` fails with one line that names the corrupted file `names`, and writes none of `outputs`."""
    code = main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    TRIED.append(what)
    assert code == 2, f"{what}: exit {code}, stderr {err[-500:]}"
    assert err.startswith("raedit: error: ") and err.count("\n") == 1 and "Traceback" not in err, f"{what}: {err}"
    assert names.name in err, f"{what}: the error doesn't name {names.name}: {err}"
    for output in outputs:
        assert not output.exists(), f"{what}: {output} was written"


def copy_tree(source: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


def sample_argv(denoiser: Path, out: Path, *extra) -> list:
    return ["sample", "--ckpt", denoiser, "--num", 2, "--steps", 2, "--out", out, "--grid", "", *extra]


@pytest.mark.parametrize("name", ["model.safetensors", "model_config.json"])
def test_a_corrupt_saved_denoiser(world, tmp_path, capsys, name):
    denoiser = copy_tree(world["denoiser"], tmp_path / "denoiser")
    target = denoiser / name
    variants = corrupted_bytes(target.read_bytes(), name.endswith(".json"))
    if name.endswith(".safetensors"):  # weights may hold anything finite or not; statistics and latents may not
        variants |= corrupted_tensors(load_file(str(target)), "final_layer.linear.weight", skip=("NaN", "inf"))
    for label, data in variants.items():
        target.write_bytes(data)
        out = tmp_path / "samples.npz"
        assert_one_line_error(capsys, sample_argv(denoiser, out), f"denoiser {name}: {label}", target,
                              outputs=(out,))


@pytest.mark.parametrize("name", ["rae.safetensors", "rae_config.json"])
def test_a_corrupt_saved_rae(world, tmp_path, capsys, name):
    rae = copy_tree(world["rae"], tmp_path / "rae")
    target = rae / name
    variants = corrupted_bytes(target.read_bytes(), name.endswith(".json"))
    if name.endswith(".safetensors"):
        tensors = load_file(str(target))
        variants |= corrupted_tensors(tensors, "latent_var") | corrupted_tensors(tensors, "decoder.head.weight",
                                                                                skip=("NaN", "inf"))
    for label, data in variants.items():
        target.write_bytes(data)
        out = tmp_path / "samples.npz"
        assert_one_line_error(capsys, sample_argv(world["denoiser"], out, "--rae", rae), f"rae {name}: {label}",
                              target, outputs=(out,))


def test_a_corrupt_latent_cache(world, tmp_path, capsys):
    cache = copy_tree(world["cache"], tmp_path / "cache")
    shard = cache / "shard-00001.safetensors"
    original = (world["cache"] / shard.name).read_bytes()
    base = ["train", "stage2/demo", f"rae={world['rae']}", f"latents={cache}", "latent_shape=null",
            "train.micro_batch_size=4",
            "train.epochs=1", "preview.images=0", "train.logging.tensorboard=false", "train.logging.progress_bar=false",
            "model.depth=1", "model.width=64", "model.num_heads=2", "model.head_width=128", "model.head_num_heads=2",
            "model.num_classes=10", "train.schedule.decay_start_epoch=0", "train.schedule.decay_end_epoch=1",
            "train.schedule.warmup_epochs=0"]
    corruptions = corrupted_bytes(original) | corrupted_tensors(load_file(str(shard)), "latents")
    for index, (label, data) in enumerate(corruptions.items()):
        shard.write_bytes(data)
        run_dir = tmp_path / f"run{index}"
        assert_one_line_error(capsys, [*base, f"run_dir={run_dir}"], f"cache shard: {label}", shard,
                              outputs=(run_dir / "model",))
    shard.write_bytes(original)
    manifest = cache / "manifest.json"
    good = manifest.read_bytes()
    for index, (label, data) in enumerate(corrupted_bytes(good, json_file=True).items()):
        manifest.write_bytes(data)
        run_dir = tmp_path / f"manifest{index}"
        assert_one_line_error(capsys, [*base, f"run_dir={run_dir}"], f"cache manifest: {label}", manifest,
                              outputs=(run_dir / "model",))


def test_corrupt_statistics_files(world, tmp_path, capsys):
    mean, var = cache_stats(world["cache"])
    good = tmp_path / "stats.safetensors"
    save_file({"mean": mean.contiguous(), "var": var.contiguous()}, str(good))
    original = good.read_bytes()
    bad = tmp_path / "bad.safetensors"
    # other tensors beside mean and var are allowed in a statistics file
    variants = corrupted_bytes(original) | corrupted_tensors(load_file(str(good)), "var", skip=("extra key",))
    pt = tmp_path / "stat.pt"
    for label, data in variants.items():
        bad.write_bytes(data)
        out = tmp_path / "reconstructed"
        assert_one_line_error(capsys, ["reconstruct", world["root"] / "image.png", "--encoder", "effnet-lite0",
                                       "--input-size", "32", "--decoder-size", "tiny", "--stats", bad, "--out", out],
                              f"statistics: {label}", bad, outputs=(out,))
        pt.write_bytes(data)  # the same bytes under the official .pt name
        assert_one_line_error(capsys, ["import-official", "--out", tmp_path / "imported", "--encoder", "dinov2-b",
                                       "--decoder", pt, "--stats", pt], f"official file: {label}", pt,
                              outputs=(tmp_path / "imported" / "rae",))


def test_corrupt_yaml_and_npz(world, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    for label, text in {"not YAML": "train: [unclosed", "a list": "- 1\n- 2\n", "tab": "train:\n\tepochs: 1\n",
                        "wrong type": "train: {epochs: many}\n"}.items():
        config.write_text(text)
        assert_one_line_error(capsys, ["train", config, f"run_dir={tmp_path / 'run'}"], f"YAML: {label}", config,
                              outputs=(tmp_path / "run",))
    reference = tmp_path / "reference.npz"  # a small reference batch, so no reference features are computed twice
    np.savez(reference, arr_0=np.random.default_rng(1).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    samples = tmp_path / "samples.npz"
    np.savez(samples, arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    original = samples.read_bytes()
    # A zip member's bytes carry a CRC: a byte flipped in the data is caught (one flipped in a zip header field
    # that nothing checks leaves the file intact, so it is not a corruption here).
    npz_corruptions = {**{label: corrupt for label, corrupt in BYTE_CORRUPTIONS.items()
                          if label != "header byte flipped"}, "data byte flipped": flipped_at(0.5)}
    for label, corrupt in npz_corruptions.items():
        samples.write_bytes(corrupt(original))
        assert_one_line_error(capsys, ["eval", "--samples", samples, "--ref", reference, "--metrics", "fid",
                                       "--json", tmp_path / "out.json"], f"npz: {label}", samples,
                              outputs=(tmp_path / "out.json",))
    for label, array in {"float pixels": np.zeros((4, 32, 32, 3), np.float32),
                         "no channels": np.zeros((4, 32, 32), np.uint8)}.items():
        np.savez(samples, arr_0=array)
        assert_one_line_error(capsys, ["eval", "--samples", samples, "--ref", reference, "--metrics", "fid",
                                       "--json", tmp_path / "out.json"], f"npz: {label}", samples,
                              outputs=(tmp_path / "out.json",))
