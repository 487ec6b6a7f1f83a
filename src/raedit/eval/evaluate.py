"""Generation metrics of a sample set against reference statistics: FID, sFID, precision/recall, IS, FD_encoder,
and the class accuracy of class-conditional samples (`raedit.eval.class_accuracy`).

Follows recipe.md's "Evaluation protocol" (the ADM evaluator): Inception-v3 pool features for FID and
precision/recall (k = 3), the first 7 channels of mixed_6/conv for sFID, IS in 10 splits from the 1008-way
softmax when a logits head is available, and the Fréchet distance on a representation encoder's mean-pooled
tokens (FD_DINOv2 with `dinov2-l`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from scipy.special import logsumexp

from raedit.core.errors import RaeditError
from raedit.encoders import Encoder, build_encoder
from raedit.eval.class_accuracy import CLASSIFIER, ClassProbe, ProbeFeatures, class_probe
from raedit.eval.features import encoder_pooled_features, inception_features
from raedit.eval.frechet import GaussianStats, frechet_distance_of
from raedit.eval.image_sets import iterate_batches, load_images
from raedit.eval.inception import InceptionFeatures
from raedit.eval.precision_recall import DEFAULT_K, precision_recall
from raedit.eval.reference import ReferenceStats, default_cache_dir, load_reference

logger = logging.getLogger(__name__)

METRICS = ("fid", "sfid", "pr", "is", "fd", "class_acc")
# The labelled training images a built-in reference's class-accuracy probe is fitted on.
PROBE_TRAINING_SETS = {"fashion-mnist-test": "fashion-mnist-train", "fashion-mnist-train": "fashion-mnist-train"}
UNAVAILABLE = "unavailable"
IS_SPLITS = 10


def parse_metrics(text: str) -> tuple[str, ...]:
    """Parse "fid,sfid,pr" into ("fid", "sfid", "pr"); an unknown name is a `RaeditError`."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise RaeditError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRICS)}")
    return names


def inception_score(logits: np.ndarray, splits: int = IS_SPLITS) -> float:
    """Inception Score exp(E_x KL(p(y|x) || p(y))), averaged over `splits` equal chunks (ADM / improved-GAN).

    logits: N x 1008 from the TF Inception's softmax layer.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[0] < splits:
        raise RaeditError(f"Inception Score in {splits} splits needs at least {splits} samples, got {logits.shape[0]}")
    log_probs = logits - logsumexp(logits, axis=1, keepdims=True)  # log p(y|x), in log space against underflow
    scores = []
    for part in np.array_split(log_probs, splits):
        log_marginal = logsumexp(part, axis=0, keepdims=True) - np.log(part.shape[0])  # log p(y)
        scores.append(np.exp((np.exp(part) * (part - log_marginal)).sum(axis=1).mean()))
    return float(np.mean(scores))


@dataclass
class EvalResult:
    """Metric name -> value (float) or "unavailable", plus the sample count and notes."""

    values: dict[str, float | str] = field(default_factory=dict)
    num_samples: int = 0
    num_reference: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"metrics": self.values, "num_samples": self.num_samples, "num_reference": self.num_reference,
                "notes": self.notes}


def evaluate_samples(
    batches: Iterable[np.ndarray],
    reference: ReferenceStats,
    metrics: tuple[str, ...],
    inception: Callable[[], InceptionFeatures],
    encoder: Callable[[str], Encoder],
    fd_encoder: str = "dinov2-l",
    pr_k: int = DEFAULT_K,
    classifier: tuple[ProbeFeatures, ClassProbe] | None = None,
    sample_labels: np.ndarray | None = None,
) -> EvalResult:
    """Metrics of uint8 sample batches B x H x W x 3 against `reference` (which must hold what `metrics` need);
    `class_acc` needs the `classifier` and the samples' labels.

    The batches are consumed once; Inception, encoder and classifier features are taken from the same pass.
    """
    result = EvalResult(num_reference=reference.count)
    needed = {"fid": reference.pool, "sfid": reference.spatial, "pr": reference.pool_features,
              "fd": reference.encoders.get(fd_encoder)}
    for metric, part in needed.items():  # before the (slow) pass over the samples
        if metric in metrics:
            _require(part, metric, reference)
    if "class_acc" in metrics and (classifier is None or sample_labels is None):
        raise RaeditError("class_acc needs the samples' labels (an npz with `labels`) and a fitted classifier")
    needs_inception = any(name in metrics for name in ("fid", "sfid", "pr", "is"))
    encoder_model = encoder(fd_encoder) if "fd" in metrics else None
    extractor = inception() if needs_inception else None

    collected: dict[str, list[np.ndarray]] = {}

    def tee(stream: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        for batch in stream:
            if encoder_model is not None:
                collected.setdefault("fd", []).append(encoder_pooled_features(encoder_model, [batch]))
            if "class_acc" in metrics:
                collected.setdefault("class_acc", []).append(classifier[0]([batch]))
            yield batch

    stream = tee(batches)
    if extractor is not None:
        features = inception_features(extractor, stream)
    else:
        features = {}
        for _ in stream:
            pass
    fd_features = np.concatenate(collected["fd"]) if "fd" in collected else None
    counts = [len(features["pool"])] if features else []
    counts += [sum(len(part) for part in parts) for parts in collected.values()]
    result.num_samples = counts[0] if counts else 0

    if "fid" in metrics:
        result.values["fid"] = frechet_distance_of(GaussianStats.from_features(features["pool"], "samples (pool)"),
                                                   _require(reference.pool, "fid", reference))
    if "sfid" in metrics:
        result.values["sfid"] = frechet_distance_of(
            GaussianStats.from_features(features["spatial"], "samples (spatial)"),
            _require(reference.spatial, "sfid", reference),
        )
    if "pr" in metrics:
        ref_features = _require(reference.pool_features, "pr", reference)
        result.values["precision"], result.values["recall"] = precision_recall(ref_features, features["pool"], pr_k)
    if "is" in metrics:
        if "logits" in features:
            result.values["is"] = inception_score(features["logits"])
        else:
            result.values["is"] = UNAVAILABLE
            result.notes.append(
                "IS unavailable: the TF FID Inception file has no 1008-class logits; give a logits file "
                "(--inception-logits) to compute it"
            )
    if "class_acc" in metrics:
        probe = classifier[1]
        if len(sample_labels) != result.num_samples:
            raise RaeditError(f"{len(sample_labels)} labels for {result.num_samples} samples")
        result.values["class_acc"] = probe.probe.accuracy(np.concatenate(collected["class_acc"]), sample_labels)
        result.values["class_acc_real"] = probe.test_accuracy
        result.notes.append(f"class_acc: {CLASSIFIER}, fitted on {probe.num_train} real training images; "
                            f"class_acc_real: its accuracy on {probe.num_test} real test images (the ceiling)")
    if "fd" in metrics:
        result.values[f"fd_{fd_encoder}"] = frechet_distance_of(
            GaussianStats.from_features(fd_features, f"samples ({fd_encoder})"),
            _require(reference.encoders.get(fd_encoder), "fd", reference),
        )
    return result


def _require(value, metric: str, reference: ReferenceStats):
    if value is None:
        raise RaeditError(f"reference {reference.source} has no statistics for '{metric}'")
    return value


def evaluate_file(
    samples_path: str | Path,
    ref: str,
    metrics: tuple[str, ...],
    *,
    ref_limit: int | None = None,
    batch_size: int = 50,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    fd_encoder: str = "dinov2-l",
    fd_encoder_weights: str | None = None,
    inception_logits: str | None = None,
    probe_train: str | None = None,
    probe_train_limit: int | None = 10000,
) -> EvalResult:
    """`raedit eval`: metrics of the samples in an npz or image folder against the reference `ref` (an npz,
    an image folder, a cached statistics file, or a built-in data set name), whose statistics are cached.

    class_acc: the classifier is fitted on the first `probe_train_limit` images of `probe_train` (labelled; a
    built-in reference names its training split) and scored on the reference's labelled images."""
    samples = load_images(samples_path)
    classifier, labels = None, None
    if "class_acc" in metrics:
        labels = _sample_labels(samples_path)
        probe_train = probe_train or PROBE_TRAINING_SETS.get(ref)
        if probe_train is None:
            raise RaeditError("class_acc needs labelled training images for its classifier: give --probe-train "
                              "(a built-in data set, an npz with labels, or a class-per-folder image folder)")
        features = ProbeFeatures(device)
        classifier = (features, class_probe(
            probe_train, ref, samples.shape[1], features, Path(cache_dir) if cache_dir else default_cache_dir(),
            probe_train_limit, ref_limit))

    @lru_cache(maxsize=1)
    def inception() -> InceptionFeatures:
        return InceptionFeatures(logits_file=inception_logits, device=device)

    @lru_cache(maxsize=2)
    def encoder(name: str) -> Encoder:
        return build_encoder(name, fd_encoder_weights).to(device)

    reference = load_reference(
        ref, resolution=samples.shape[1], limit=ref_limit, batch_size=batch_size,
        need_inception=any(m in metrics for m in ("fid", "sfid")), need_spatial="sfid" in metrics,
        need_pool_features="pr" in metrics,
        encoder_names=(fd_encoder,) if "fd" in metrics else (), inception=inception, encoder=encoder,
        cache_dir=cache_dir,
    )
    return evaluate_samples(iterate_batches(samples, batch_size, samples_path), reference, metrics,
                            inception, encoder, fd_encoder=fd_encoder, classifier=classifier, sample_labels=labels)


def _sample_labels(path: str | Path) -> np.ndarray:
    """The `labels` a sample npz stores (`raedit sample` writes them), for class accuracy."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "labels" in archive.files:
                return archive["labels"].astype(np.int64)
    raise RaeditError(f"class_acc needs the samples' labels: {path} is not an npz with `labels` "
                      "(as `raedit sample` writes)")
