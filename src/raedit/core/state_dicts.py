"""State dicts as checkpoints hold them: the weights entry, wrapper prefixes, and a strict fit check whose
error names the first mismatch."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from raedit.core.errors import RaeditError

# Prefixes that wrappers add to every key: DistributedDataParallel ("module.") and torch.compile ("_orig_mod.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def weights_of(checkpoint: Mapping, source: str) -> dict[str, torch.Tensor]:
    """The weights in a loaded checkpoint: its `ema` entry (the weights to sample with), else the checkpoint
    itself when it is a bare state dict, with wrapper prefixes stripped from the keys."""
    state = checkpoint.get("ema", checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise RaeditError(f"{source} is neither a state dict nor a checkpoint with an 'ema' state dict "
                          f"(its entries: {', '.join(map(str, list(checkpoint)[:8]))})")
    return {strip_wrapper_prefixes(key): value for key, value in state.items()}


def rename_key(key: str, renames: list[tuple[str, str]]) -> str:
    """`key` renamed by the first (regex pattern, replacement) of `renames` that matches it; unchanged if none."""
    for pattern, replacement in renames:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def strip_wrapper_prefixes(key: str) -> str:
    """`key` without the prefixes of DDP and torch.compile wrappers, however nested."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def check_fits(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], what: str) -> None:
    """A `RaeditError` naming the first difference between two state dicts' keys, shapes or kinds of values
    (floating point or not; any float precision fits), if any."""
    missing = [key for key in expected if key not in given]
    if missing:
        raise RaeditError(f"{what} lacks {missing[0]!r}" + _and_more(missing))
    unexpected = [key for key in given if key not in expected]
    if unexpected:
        raise RaeditError(f"{what} has an unexpected {unexpected[0]!r}" + _and_more(unexpected))
    wrong = [key for key, value in expected.items() if tuple(given[key].shape) != tuple(value.shape)]
    if wrong:
        key = wrong[0]
        raise RaeditError(f"{what}: {key!r} has shape {tuple(given[key].shape)}, the model's is "
                          f"{tuple(expected[key].shape)}" + _and_more(wrong))
    kinds = [key for key, value in expected.items() if given[key].is_floating_point() != value.is_floating_point()]
    if kinds:
        key = kinds[0]
        raise RaeditError(f"{what}: {key!r} holds {given[key].dtype} values, the model's are {expected[key].dtype}"
                          + _and_more(kinds))


def _and_more(keys: list[str]) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
