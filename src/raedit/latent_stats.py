"""Latent statistics for the RAE normalization (recipe.md, "latent normalization"): per position and channel
mean and population variance of the raw encoder tokens, C x h x w.

Streaming and exact: each batch is merged into a running (count, mean, M2) with the parallel formula of Chan et
al. in float64, and ranks merge their partial results the same way, so the result does not depend on batch size
or the number of processes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from raedit.core.distributed import all_gather_objects
from raedit.core.errors import RaeditError
from raedit.core.files import read_state_dict, save_tensors


class RunningMoments:
    """Running count, mean and sum of squared deviations (M2) over the batch axis of tensors of one shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = 0
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.m2 = torch.zeros(shape, dtype=torch.float64)

    def merge(self, count: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Chan et al.'s pairwise update: combine (count, mean, M2) of another part of the data."""
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * count / total)
        self.count = total

    def update(self, batch: torch.Tensor) -> None:
        """batch: B x *shape."""
        if batch.shape[1:] != self.mean.shape:
            raise RaeditError(f"batch of shape {tuple(batch.shape[1:])} does not match statistics of shape "
                              f"{tuple(self.mean.shape)}")
        values = batch.detach().to("cpu", torch.float64)
        batch_mean = values.mean(dim=0)
        self.merge(values.shape[0], batch_mean, (values - batch_mean).square().sum(dim=0))

    def all_reduce(self) -> None:
        """Merge the moments of every rank into each rank's copy (nothing to do in a single process)."""
        parts = all_gather_objects((self.count, self.mean, self.m2))
        if len(parts) == 1:
            return
        self.count = 0
        self.mean = torch.zeros_like(self.mean)
        self.m2 = torch.zeros_like(self.m2)
        for count, mean, m2 in parts:  # type: ignore[misc]
            self.merge(count, mean, m2)

    @property
    def variance(self) -> torch.Tensor:
        """Population variance (divides by the count), as the official statistics."""
        if self.count == 0:
            raise RaeditError("no samples were seen: cannot compute latent statistics")
        return self.m2 / self.count


def save_latent_stats(path: str | Path, mean: torch.Tensor, var: torch.Tensor, encoder: str, count: int) -> None:
    """mean, var: C x h x w, saved as float32 safetensors with the encoder's name and the sample count."""
    save_tensors(path, {"mean": mean.float(), "var": var.float()}, metadata={"encoder": encoder, "count": str(count)})


def load_latent_stats(path: str | Path, expected_shape: tuple[int, int, int] | None = None,
                      encoder: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var), each C x h x w, from a raedit safetensors file or an official `stat.pt` dict.

    A file whose shape differs from `expected_shape` (made for another encoder or resolution) is an error.
    """
    path = Path(path)
    stored = read_state_dict(path, "latent statistics")
    made_for = None
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:  # readable: read_state_dict read it
            made_for = (handle.metadata() or {}).get("encoder")
    mean, var = checked_stats(stored, ("mean", "var"), path)
    mean, var = mean.squeeze(0), var.squeeze(0)
    if expected_shape is not None and tuple(mean.shape) != tuple(expected_shape):
        origin = f" (made for encoder '{made_for}')" if made_for else ""
        raise RaeditError(f"latent statistics in {path}{origin} have shape {tuple(mean.shape)}, but this "
                          f"autoencoder's latents are {tuple(expected_shape)}")
    if tuple(var.shape) != tuple(mean.shape):
        raise RaeditError(f"{path}: 'mean' {tuple(mean.shape)} and 'var' {tuple(var.shape)} differ in shape")
    if made_for and encoder and made_for != encoder:
        raise RaeditError(f"latent statistics in {path} were made for encoder '{made_for}', not '{encoder}'")
    return mean, var


def checked_stats(tensors: dict[str, torch.Tensor], keys: tuple[str, str], source: str | Path,
                  shape: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var) from `tensors[keys]`: floating point, finite, var >= 0, of `shape` when given; else a
    `RaeditError` naming `source`."""
    missing = [key for key in keys if not isinstance(tensors.get(key), torch.Tensor)]
    if missing:
        raise RaeditError(f"{source} lacks the latent statistic {missing[0]!r}")
    mean, var = (tensors[key] for key in keys)
    for key, value in zip(keys, (mean, var)):
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise RaeditError(f"{source}: the latent statistic {key!r} has shape {tuple(value.shape)}, the "
                              f"latents are {tuple(shape)}")
        if not value.is_floating_point():
            raise RaeditError(f"{source}: the latent statistic {key!r} holds {value.dtype} values, not floats")
        if not bool(torch.isfinite(value).all()):
            raise RaeditError(f"{source}: the latent statistic {key!r} holds NaN or inf values")
    if bool((var < 0).any()):
        raise RaeditError(f"{source}: the latent variance {keys[1]!r} has negative values")
    return mean.float(), var.float()
