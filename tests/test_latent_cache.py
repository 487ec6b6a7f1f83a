import json
import os

import pytest
import torch
from safetensors import safe_open
from stage2_helpers import cache_config
from torchrun import run_torchrun_code

from raedit.cli import main
from raedit.core.errors import RaeditError
from raedit.data.fashion_mnist import load_fashion_mnist, to_rgb
from raedit.data.latent_cache import LatentCache, shard_path
from raedit.encoders import build_encoder
from raedit.jobs.cache_latents import cache_latents


@pytest.fixture(scope="module")
def direct_latents() -> torch.Tensor:
    """Raw EffNet-Lite0 latents (20, 112, 2, 2) of the first 20 training images, encoded directly."""
    encoder = build_encoder("effnet-lite0", input_size=32)
    images, _ = load_fashion_mnist("train")
    images = to_rgb(images[:20], 32)
    return encoder.encode_latents(images), encoder.encode_latents(images.flip(-1))


def test_shards_and_manifest_hold_the_encoded_latents(tmp_path, direct_latents):
    manifest_path = cache_latents(cache_config(tmp_path / "c", 20))
    manifest = json.loads(manifest_path.read_text())
    assert manifest["count"] == 20 and manifest["latent_shape"] == [112, 2, 2] and manifest["num_classes"] == 10
    assert [s["count"] for s in manifest["shards"]] == [8, 8, 4]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "cache_config.json", "manifest.json", "shard-00000.safetensors", "shard-00001.safetensors",
        "shard-00002.safetensors"]
    cache = LatentCache(tmp_path / "c")
    latents = torch.stack([cache[i][0] for i in range(20)])
    torch.testing.assert_close(latents, direct_latents[0], rtol=1e-4, atol=1e-4)
    _, labels = load_fashion_mnist("train")
    assert [cache[i][1] for i in range(20)] == labels[:20].tolist()


def test_resume_rewrites_only_the_missing_shard(tmp_path):
    config = cache_config(tmp_path / "c", 20)
    cache_latents(config)
    before = {k: shard_path(tmp_path / "c", k).stat().st_mtime_ns for k in range(3)}
    with safe_open(str(shard_path(tmp_path / "c", 1)), "pt") as handle:
        shard_1 = handle.get_tensor("latents")
    shard_path(tmp_path / "c", 1).unlink()  # a kill during shard 1: it and the manifest are missing
    (tmp_path / "c" / "manifest.json").unlink()
    with pytest.raises(RaeditError, match="not a finished latent cache"):
        LatentCache(tmp_path / "c")
    cache_latents(config)
    after = {k: shard_path(tmp_path / "c", k).stat().st_mtime_ns for k in range(3)}
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1] != before[1]
    with safe_open(str(shard_path(tmp_path / "c", 1)), "pt") as handle:
        torch.testing.assert_close(handle.get_tensor("latents"), shard_1)
    assert len(LatentCache(tmp_path / "c")) == 20


def test_hflip_stores_mirrored_latents_and_an_epoch_is_one_pass_over_the_images(tmp_path, direct_latents):
    cache_latents(cache_config(tmp_path / "c", 20, hflip="true"))
    with safe_open(str(shard_path(tmp_path / "c", 0)), "pt") as handle:
        flipped, indices = handle.get_tensor("flipped"), handle.get_tensor("indices")
        latents = handle.get_tensor("latents")
    assert int(flipped.sum()) == 8 and sorted(indices.tolist()) == sorted(list(range(8)) * 2)
    plain, mirrored = direct_latents
    torch.testing.assert_close(latents[flipped], mirrored[indices[flipped]], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(latents[~flipped], plain[indices[~flipped]], rtol=1e-4, atol=1e-4)

    cache = LatentCache(tmp_path / "c")
    assert len(cache) == 20 and cache.manifest["hflip"] is True  # items are images: 20, not 40 stored latents
    _, labels = load_fashion_mnist("train")
    drawn = []  # per epoch, which version of each image the pass gives
    for epoch in range(4):
        cache.set_epoch(epoch, seed=3)
        versions = []
        for index in range(20):
            latent, label = cache[index]
            assert label == labels[index]
            is_plain = torch.allclose(latent, plain[index], rtol=1e-4, atol=1e-4)
            assert is_plain or torch.allclose(latent, mirrored[index], rtol=1e-4, atol=1e-4)
            versions.append(not is_plain)
        drawn.append(versions)
        resumed = LatentCache(tmp_path / "c")  # a resumed run: another instance, the same pass
        resumed.set_epoch(epoch, seed=3)
        assert all(torch.equal(resumed[index][0], cache[index][0]) for index in range(20))
    assert 0 < sum(map(sum, drawn)) < 80  # both versions occur
    assert len({tuple(versions) for versions in drawn}) == 4  # each pass draws anew


def test_two_ranks_write_the_same_cache_as_one(tmp_path):
    result = run_torchrun_code(tmp_path, f"""
        import sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from stage2_helpers import cache_config
        from raedit.jobs.cache_latents import cache_latents
        cache_latents(cache_config({str(tmp_path / 'two')!r}, 20))
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    cache_latents(cache_config(tmp_path / "one", 20))
    one, two = LatentCache(tmp_path / "one"), LatentCache(tmp_path / "two")
    assert one.manifest["shards"] == two.manifest["shards"]
    for index in range(20):
        # the same images in the same shards; only the conv kernels' thread count differs (1 vs 2 threads)
        torch.testing.assert_close(one[index][0], two[index][0], rtol=1e-4, atol=1e-4)
        assert one[index][1] == two[index][1]


def test_cache_latents_command(tmp_path, capsys):
    config = tmp_path / "cache.yaml"
    config.write_text("autoencoder: {encoder: effnet-lite0, encoder_input_size: 32}\n"
                      "data: {name: fashion-mnist, resolution: 32, limit: 6}\nshard_size: 4\n")
    assert main(["cache-latents", str(config), f"out={tmp_path / 'c'}"]) == 0
    assert len(LatentCache(tmp_path / "c")) == 6
    assert main(["cache-latents", str(config), "shard_sise=4"]) == 2
    assert "unknown config key 'shard_sise'" in capsys.readouterr().err


def test_a_cache_directory_holds_one_cache(tmp_path, capsys):
    """Resuming with the same settings goes on; other settings (that would give other shards) are refused before
    anything is written, instead of mixing two caches' shards."""
    cache_latents(cache_config(tmp_path / "c", 20))
    cache_latents(cache_config(tmp_path / "c", 20, batch_size="4"))  # how, not what: the same cache
    before = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "c").iterdir()}
    with pytest.raises(RaeditError, match=r"holds a latent cache of other settings \(they differ in data\)"):
        cache_latents(cache_config(tmp_path / "c", 12))
    with pytest.raises(RaeditError, match="differ in hflip"):
        cache_latents(cache_config(tmp_path / "c", 20, hflip="true"))
    assert {path.name: path.stat().st_mtime_ns for path in (tmp_path / "c").iterdir()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RaeditError, match="holds files but no cache_config.json"):
        cache_latents(cache_config(tmp_path / "other", 20))


def test_a_cache_begun_by_an_earlier_raedit_continues(tmp_path, caplog):
    cache_latents(cache_config(tmp_path / "c", 20))
    (tmp_path / "c" / "cache_config.json").unlink()  # as an earlier raedit left it
    shard_path(tmp_path / "c", 1).unlink()  # killed before this shard
    cache_latents(cache_config(tmp_path / "c", 20))
    assert "started by an earlier raedit" in caplog.text and len(LatentCache(tmp_path / "c")) == 20
    assert (tmp_path / "c" / "cache_config.json").is_file()


def test_images_with_latents_pair_each_drawn_latent_with_its_image_flipped_alike(tmp_path):
    from raedit.data import DataConfig
    from raedit.data.latent_cache import ImagesWithLatents

    cache_latents(cache_config(tmp_path / "c", 12, hflip="true"))
    cache = LatentCache(tmp_path / "c")
    pairs = ImagesWithLatents(cache, DataConfig(resolution=32, limit=12))
    encoder = build_encoder("effnet-lite0", input_size=32)
    _, labels = load_fashion_mnist("train")
    flips = []
    for epoch in range(3):
        pairs.set_epoch(epoch, seed=0)
        images, latents, drawn_labels = zip(*(pairs[i] for i in range(12)))
        torch.testing.assert_close(encoder.encode_latents(torch.stack(images)), torch.stack(latents),
                                   rtol=1e-4, atol=1e-4)
        assert list(drawn_labels) == labels[:12].tolist()
        flips += [cache.source_of(i)[1] for i in range(12)]
        assert [cache.source_of(i)[0] for i in range(12)] == list(range(12))
    assert 0 < sum(flips) < len(flips)  # both versions are drawn


def test_images_with_latents_refuse_a_cache_of_other_images(tmp_path):
    from raedit.data import DataConfig
    from raedit.data.latent_cache import ImagesWithLatents

    cache_latents(cache_config(tmp_path / "c", 12))
    with pytest.raises(RaeditError, match="made of other data .* differ in limit"):
        ImagesWithLatents(LatentCache(tmp_path / "c"), DataConfig(resolution=32, limit=16))
    with pytest.raises(RaeditError, match="differ in split"):
        ImagesWithLatents(LatentCache(tmp_path / "c"), DataConfig(resolution=32, limit=12, split="test"))


def test_images_with_latents_from_an_image_folder(tmp_path):
    """A cached image folder (center crops): each drawn latent comes with its own image, flipped alike."""
    import numpy as np
    from PIL import Image

    from raedit.core.config import load_config
    from raedit.data import DataConfig
    from raedit.data.latent_cache import ImagesWithLatents
    from raedit.jobs.cache_latents import CacheConfig

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                tmp_path / "images" / name / f"{index}.png")
    data = ["data.name=folder", f"data.path={tmp_path / 'images'}", "data.resolution=32", "data.crop=center"]
    cache_latents(load_config(CacheConfig, overrides=[
        *data, "autoencoder.encoder=effnet-lite0", "autoencoder.encoder_input_size=32", "hflip=true", "batch_size=4",
        "shard_size=4", f"out={tmp_path / 'c'}"]))
    cache = LatentCache(tmp_path / "c")
    pairs = ImagesWithLatents(cache, DataConfig(name="folder", path=str(tmp_path / "images"), resolution=32))
    encoder = build_encoder("effnet-lite0", input_size=32)
    for epoch in range(2):
        pairs.set_epoch(epoch)
        images, latents, labels = zip(*(pairs[i] for i in range(6)))
        torch.testing.assert_close(encoder.encode_latents(torch.stack(images)), torch.stack(latents),
                                   rtol=1e-4, atol=1e-4)
        assert list(labels) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(RaeditError, match="deterministic images"):
        ImagesWithLatents(cache, DataConfig(name="folder", path=str(tmp_path / "images"), resolution=32,
                                            crop="random"))
