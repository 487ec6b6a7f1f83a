"""Reference statistics: computed once from reference images, cached to an npz file, or read from ADM's npz.

A stats file holds, under ADM's key names, `mu`/`sigma` (pool features) and `mu_s`/`sigma_s` (spatial features),
so the ADM evaluator can read raedit's files and raedit reads ADM reference batches (which may also carry the
images as `arr_0`, used for precision/recall). raedit adds `pool_features` (N x 2048, for precision/recall),
`count`, and per encoder `fd_mu__NAME` / `fd_sigma__NAME` / `fd_count__NAME` (Fréchet distance on encoder features).

A reference is named by: a stats npz (`mu` key), an npz of images (`arr_0`), an image folder, or a built-in data
set (`fashion-mnist-test`, `fashion-mnist-train`, upscaled to the sample resolution as training sees it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from raedit.core.errors import RaeditError
from raedit.core.files import atomic_path
from raedit.core.images import to_uint8_hwc
from raedit.data.fashion_mnist import load_fashion_mnist, to_rgb
from raedit.encoders import Encoder
from raedit.eval.features import encoder_pooled_features, inception_features
from raedit.eval.frechet import GaussianStats
from raedit.eval.image_sets import NpzImages, iterate_batches, load_images, validate_images
from raedit.eval.inception import InceptionFeatures

logger = logging.getLogger(__name__)

BUILTIN_REFERENCES = {"fashion-mnist-test": "test", "fashion-mnist-train": "train"}
STATS_VERSION = 1


@dataclass
class ReferenceStats:
    """What the metrics need of the reference set; any part may be missing (None / absent key)."""

    source: str
    count: int = 0
    pool: GaussianStats | None = None  # FID: mu, sigma
    spatial: GaussianStats | None = None  # sFID: mu_s, sigma_s
    pool_features: np.ndarray | None = None  # precision/recall: N x 2048
    encoders: dict[str, GaussianStats] = field(default_factory=dict)  # FD on encoder features

    def save(self, path: str | Path) -> None:
        """Write an npz with ADM's key names plus raedit's extras, atomically."""
        arrays: dict[str, np.ndarray] = {"count": np.int64(self.count), "stats_version": np.int64(STATS_VERSION)}
        if self.pool is not None:
            arrays.update(mu=self.pool.mu, sigma=self.pool.sigma)
        if self.spatial is not None:
            arrays.update(mu_s=self.spatial.mu, sigma_s=self.spatial.sigma)
        if self.pool_features is not None:
            arrays["pool_features"] = self.pool_features.astype(np.float32)
        for name, stats in self.encoders.items():
            arrays.update({f"fd_mu__{name}": stats.mu, f"fd_sigma__{name}": stats.sigma,
                           f"fd_count__{name}": np.int64(stats.count)})
        with atomic_path(path) as temporary:
            np.savez(temporary, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceStats":
        """Read a raedit stats file or an ADM reference batch (`mu`, `sigma`, `mu_s`, `sigma_s`[, `arr_0`])."""
        path = Path(path)
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if "mu" not in keys or "sigma" not in keys:
                raise RaeditError(f"{path}: not a statistics file (no 'mu'/'sigma'; found {', '.join(sorted(keys))})")
            count = int(archive["count"]) if "count" in keys else (len(archive["arr_0"]) if "arr_0" in keys else 0)
            stats = cls(source=str(path), count=count)
            stats.pool = GaussianStats(archive["mu"].astype(np.float64), archive["sigma"].astype(np.float64), count)
            if "mu_s" in keys and "sigma_s" in keys:
                stats.spatial = GaussianStats(archive["mu_s"].astype(np.float64),
                                              archive["sigma_s"].astype(np.float64), count)
            if "pool_features" in keys:
                stats.pool_features = archive["pool_features"]
            for key in keys:
                if key.startswith("fd_mu__"):
                    name = key[len("fd_mu__") :]
                    stats.encoders[name] = GaussianStats(archive[key], archive[f"fd_sigma__{name}"],
                                                         int(archive[f"fd_count__{name}"]))
        return stats


def builtin_reference_images(name: str, resolution: int, limit: int | None = None) -> np.ndarray:
    """A built-in data set as uint8 N x R x R x 3, resized as training data is (`raedit.data.fashion_mnist.to_rgb`)
    and rounded to the nearest level, as PIL resizes the images of the ADM reference batches."""
    images, _ = load_fashion_mnist(BUILTIN_REFERENCES[name])
    images = images[:limit] if limit is not None else images
    chunks = [to_uint8_hwc(to_rgb(images[start : start + 1000], resolution), "nearest")
              for start in range(0, len(images), 1000)]
    return np.concatenate(chunks)


def _is_stats_file(path: Path) -> bool:
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as archive:
            return "mu" in archive.files
    except (ValueError, OSError):
        return False


def source_identity(ref: str) -> str:
    """What names an image set's content in cache keys: a built-in name, or the file's path, size and time (a path
    that does not exist names itself; reading it fails later with its own error)."""
    if ref in BUILTIN_REFERENCES or not Path(ref).exists():
        return ref
    resolved = Path(ref).resolve()
    info = resolved.stat()
    return f"{resolved}|{info.st_size}|{info.st_mtime_ns}"


def _cache_path(ref: str, resolution: int | None, limit: int | None, cache_dir: Path) -> Path:
    identity = source_identity(ref)
    digest = hashlib.sha1(f"{identity}|{resolution}|{limit}|v{STATS_VERSION}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(ref).name or ref)
    return cache_dir / f"{stem}-{digest}.npz"


def default_cache_dir() -> Path:
    """`$RAEDIT_CACHE/eval`, else `~/.cache/raedit/eval`."""
    root = os.environ.get("RAEDIT_CACHE")
    return Path(root) / "eval" if root else Path.home() / ".cache" / "raedit" / "eval"


def load_reference(
    ref: str,
    *,
    resolution: int | None,
    need_inception: bool,
    need_pool_features: bool,
    need_spatial: bool = False,
    encoder_names: tuple[str, ...] = (),
    inception: Callable[[], InceptionFeatures],
    encoder: Callable[[str], Encoder],
    limit: int | None = None,
    batch_size: int = 50,
    cache_dir: str | Path | None = None,
) -> ReferenceStats:
    """Statistics of the reference `ref`, computing (and caching) only the parts that are missing.

    `inception()` and `encoder(name)` build extractors lazily. `resolution` is the sample resolution (used to
    upscale built-in data sets); `limit` keeps the first `limit` reference images. The spatial (sFID) statistics
    are computed only when `need_spatial`.
    """
    path = Path(ref)
    images: np.ndarray | NpzImages | None = None
    cache: Path | None = None
    if _is_stats_file(path):
        stats = ReferenceStats.load(path)
        with np.load(path, allow_pickle=False) as archive:
            if "arr_0" in archive.files:
                images = validate_images(archive["arr_0"], str(path))
    else:
        if ref in BUILTIN_REFERENCES:
            if resolution is None:
                raise RaeditError(f"reference '{ref}' needs the sample resolution")
        elif not path.exists():
            builtin = ", ".join(BUILTIN_REFERENCES)
            raise RaeditError(f"reference not found: {ref} (give an npz, an image folder, or one of {builtin})")
        cache = _cache_path(ref, resolution, limit, Path(cache_dir) if cache_dir else default_cache_dir())
        stats = ReferenceStats.load(cache) if cache.is_file() else ReferenceStats(source=ref)
        if cache.is_file():
            logger.info("reference statistics from cache %s", cache)

    missing_inception = ((need_inception and stats.pool is None) or (need_spatial and stats.spatial is None)
                         or (need_pool_features and stats.pool_features is None))
    missing_encoders = [name for name in encoder_names if name not in stats.encoders]
    if not missing_inception and not missing_encoders:
        return stats
    if images is None and cache is None:
        wanted = (["Inception statistics/features"] if missing_inception else []) + missing_encoders
        raise RaeditError(f"{ref} lacks {', '.join(wanted)} and holds no images to compute them from")
    if images is None:
        images = builtin_reference_images(ref, resolution, limit) if ref in BUILTIN_REFERENCES else load_images(ref)
        if limit is not None:
            images = images.first(limit) if isinstance(images, NpzImages) else images[:limit]
    stats.count = len(images)
    if missing_inception:
        logger.info("computing Inception features of %d reference images", len(images))
        features = inception_features(inception(), iterate_batches(images, batch_size, ref))
        if stats.pool is None:  # statistics given in the file are kept as given
            stats.pool = GaussianStats.from_features(features["pool"], f"reference {ref} (pool)")
        if stats.spatial is None and need_spatial:
            stats.spatial = GaussianStats.from_features(features["spatial"], f"reference {ref} (spatial)")
        stats.pool_features = features["pool"]
    for name in missing_encoders:
        logger.info("computing %s features of %d reference images", name, len(images))
        pooled = encoder_pooled_features(encoder(name), iterate_batches(images, batch_size, ref))
        stats.encoders[name] = GaussianStats.from_features(pooled, f"reference {ref} ({name})")
    if cache is not None:
        stats.save(cache)
        logger.info("reference statistics cached to %s", cache)
    return stats
