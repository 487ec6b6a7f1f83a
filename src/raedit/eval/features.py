"""Run feature extractors over uint8 image batches: Inception features, and mean-pooled encoder tokens."""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np

from raedit.core.errors import RaeditError
from raedit.core.images import from_uint8_hwc
from raedit.encoders import Encoder
from raedit.eval.inception import InceptionFeatures

logger = logging.getLogger(__name__)


def inception_features(extractor: InceptionFeatures, batches: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """uint8 batches B x H x W x 3 -> {"pool": N x 2048, "spatial": N x 2023[, "logits": N x 1008]}."""
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    for batch in batches:
        for name, value in extractor(batch).items():
            parts.setdefault(name, []).append(value.numpy())
        done += batch.shape[0]
        logger.debug("Inception features: %d images", done)
    if not parts:
        raise RaeditError("no images to evaluate")
    return {name: np.concatenate(values) for name, values in parts.items()}


def encoder_pooled_features(encoder: Encoder, batches: Iterable[np.ndarray]) -> np.ndarray:
    """Mean-pooled tokens of a frozen encoder: uint8 batches B x H x W x 3 -> N x C (float32).

    The encoder resizes and normalizes the [0, 1] images itself (`Encoder.normalize`).
    """
    device = next(iter(encoder.buffers())).device
    pooled = []
    for batch in batches:
        tokens = encoder.encode(from_uint8_hwc(batch, device))  # B x N x C
        pooled.append(tokens.float().mean(dim=1).cpu().numpy())
    if not pooled:
        raise RaeditError("no images to encode")
    return np.concatenate(pooled)
