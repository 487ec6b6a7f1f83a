"""Reference statistics: computed once and cached, ADM npz files, built-in data, and the metric pipeline."""

import numpy as np
import pytest
from eval_fakes import FakeInception, PatchMeanEncoder

from raedit.core.errors import RaeditError
from raedit.eval.evaluate import UNAVAILABLE, evaluate_samples
from raedit.eval.features import inception_features
from raedit.eval.frechet import GaussianStats, frechet_distance_of
from raedit.eval.image_sets import iterate_batches
from raedit.eval.precision_recall import precision_recall
from raedit.eval.reference import ReferenceStats, load_reference


def _images(count: int, seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _load(ref, fake, encoder_names=(), **kwargs):
    encoder = PatchMeanEncoder()
    kwargs.setdefault("need_pool_features", True)
    kwargs.setdefault("need_spatial", True)
    stats = load_reference(str(ref), resolution=kwargs.pop("resolution", 8), need_inception=True,
                           encoder_names=encoder_names, inception=lambda: fake, encoder=lambda name: encoder,
                           batch_size=7, **kwargs)
    return stats, encoder


def test_stats_round_trip(tmp_path):
    features = np.random.default_rng(0).normal(size=(30, 6))
    stats = ReferenceStats(source="x", count=30, pool=GaussianStats.from_features(features),
                           spatial=GaussianStats.from_features(features[:, :4]), pool_features=features.astype(np.float32),
                           encoders={"patch-mean": GaussianStats.from_features(features[:, :3])})
    stats.save(tmp_path / "stats.npz")
    loaded = ReferenceStats.load(tmp_path / "stats.npz")
    assert loaded.count == 30
    np.testing.assert_allclose(loaded.pool.sigma, stats.pool.sigma)
    np.testing.assert_allclose(loaded.spatial.mu, stats.spatial.mu)
    np.testing.assert_allclose(loaded.encoders["patch-mean"].sigma, stats.encoders["patch-mean"].sigma)
    np.testing.assert_allclose(loaded.pool_features, features, rtol=1e-6)


def test_image_reference_is_computed_once_and_cached(tmp_path):
    np.savez(tmp_path / "ref.npz", arr_0=_images(20, 0))
    fake = FakeInception()
    first, _ = _load(tmp_path / "ref.npz", fake, cache_dir=tmp_path / "cache")
    assert fake.images_seen == 20 and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    second, encoder = _load(tmp_path / "ref.npz", fake, cache_dir=tmp_path / "cache")
    assert fake.images_seen == 20 and encoder.calls == 0  # nothing recomputed
    np.testing.assert_array_equal(second.pool.sigma, first.pool.sigma)
    third, encoder = _load(tmp_path / "ref.npz", fake, encoder_names=("patch-mean",), cache_dir=tmp_path / "cache")
    assert fake.images_seen == 20 and encoder.calls > 0  # only the missing encoder statistics
    assert ReferenceStats.load(next((tmp_path / "cache").glob("*.npz"))).encoders["patch-mean"].count == 20


def test_adm_reference_batch_with_precomputed_statistics(tmp_path):
    images = _images(12, 1)
    mu, sigma = np.arange(6.0), np.eye(6)
    np.savez(tmp_path / "VIRTUAL_ref.npz", arr_0=images, mu=mu, sigma=sigma, mu_s=np.zeros(4), sigma_s=np.eye(4))
    fake = FakeInception()
    stats, _ = _load(tmp_path / "VIRTUAL_ref.npz", fake, need_pool_features=False, cache_dir=tmp_path / "c")
    assert fake.images_seen == 0  # mu/sigma are taken as given
    np.testing.assert_array_equal(stats.pool.mu, mu)
    stats, _ = _load(tmp_path / "VIRTUAL_ref.npz", fake, need_pool_features=True, cache_dir=tmp_path / "c")
    assert fake.images_seen == 12 and stats.pool_features.shape == (12, 6)  # precision/recall needs features
    np.testing.assert_array_equal(stats.pool.mu, mu)
    assert not (tmp_path / "c").exists()  # a given statistics file is never rewritten


def test_statistics_file_without_images_cannot_supply_missing_parts(tmp_path):
    np.savez(tmp_path / "stats.npz", mu=np.zeros(6), sigma=np.eye(6))
    with pytest.raises(RaeditError, match="lacks Inception statistics/features and holds no images"):
        _load(tmp_path / "stats.npz", FakeInception())
    with pytest.raises(RaeditError, match="reference not found"):
        _load(tmp_path / "missing.npz", FakeInception())


def test_builtin_fashion_mnist_is_upscaled_to_the_sample_resolution(tmp_path):
    fake = FakeInception()
    stats, _ = _load("fashion-mnist-test", fake, resolution=32, limit=10, cache_dir=tmp_path)
    assert stats.count == 10 and fake.shapes == {(32, 32, 3)}


def test_metrics_match_direct_computation_and_do_not_depend_on_the_batch_size(tmp_path):
    reference_images, samples = _images(40, 2), _images(30, 3)
    np.savez(tmp_path / "ref.npz", arr_0=reference_images)
    fake = FakeInception()
    encoder = PatchMeanEncoder()
    reference = load_reference(str(tmp_path / "ref.npz"), resolution=8, need_inception=True, need_pool_features=True,
                               need_spatial=True, encoder_names=("patch-mean",), inception=lambda: fake,
                               encoder=lambda name: encoder, cache_dir=tmp_path / "cache")
    results = [
        evaluate_samples(iterate_batches(samples, batch_size), reference, ("fid", "sfid", "pr", "is", "fd"),
                         lambda: fake, lambda name: encoder, fd_encoder="patch-mean")
        for batch_size in (1, 7, 30)
    ]
    assert results[0].values == results[1].values == results[2].values
    values = results[0].values
    ref_features = inception_features(fake, [reference_images])
    sample_features = inception_features(fake, [samples])
    expected_fid = frechet_distance_of(GaussianStats.from_features(ref_features["pool"]),
                                       GaussianStats.from_features(sample_features["pool"]))
    assert values["fid"] == pytest.approx(expected_fid, rel=1e-9) and values["fid"] > 0
    assert (values["precision"], values["recall"]) == precision_recall(ref_features["pool"], sample_features["pool"])
    assert values["is"] == UNAVAILABLE and results[0].notes
    assert values["fd_patch-mean"] > 0 and results[0].num_samples == 30


def test_reference_limit_reads_only_the_first_images(tmp_path):
    np.savez(tmp_path / "ref.npz", arr_0=_images(20, 4))
    fake = FakeInception()
    stats, _ = _load(tmp_path / "ref.npz", fake, limit=5, cache_dir=tmp_path / "cache")
    assert stats.count == 5 and fake.images_seen == 5
    expected = inception_features(FakeInception(), [_images(20, 4)[:5]])["pool"]
    np.testing.assert_allclose(stats.pool_features, expected)


def test_a_missing_reference_part_fails_before_the_samples_are_read():
    reference = ReferenceStats(source="stats.npz", pool=GaussianStats(np.zeros(6), np.eye(6), 10))

    def batches():
        raise AssertionError("samples were read")
        yield

    with pytest.raises(RaeditError, match="stats.npz has no statistics for 'sfid'"):
        evaluate_samples(batches(), reference, ("fid", "sfid"), FakeInception, lambda name: PatchMeanEncoder())


def test_spatial_statistics_only_when_sfid_needs_them(tmp_path):
    """FID alone computes no sFID statistics; asking for sFID later computes them, keeping the pool statistics."""
    np.savez(tmp_path / "ref.npz", arr_0=_images(20, 4))
    fake = FakeInception()
    pool_only, _ = _load(tmp_path / "ref.npz", fake, need_spatial=False, need_pool_features=False,
                         cache_dir=tmp_path / "c")
    assert pool_only.spatial is None and pool_only.pool is not None
    with np.load(next((tmp_path / "c").glob("*.npz"))) as cached:
        assert "mu_s" not in cached.files
    both, _ = _load(tmp_path / "ref.npz", fake, need_spatial=True, need_pool_features=False, cache_dir=tmp_path / "c")
    assert both.spatial is not None and np.array_equal(both.pool.mu, pool_only.pool.mu)
