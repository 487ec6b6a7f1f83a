"""Timing on a shared, noisy machine: several paths of the same work measured in turn, round after round, so that
a drift of the machine's speed hits them alike; each path's figure is its median over the rounds, and a path is
compared with the first by the median of the per-round ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Wall seconds per call of `fn`, over `calls` calls, the device drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / calls


@dataclass
class PathTimes:
    """One path's seconds per call in each round, and its first call (compiling included)."""

    name: str
    first_call_s: float
    rounds: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.rounds)


def alternate(paths: Sequence[tuple[str, Callable[[], object]]], rounds: int, calls: int, warmup: int,
              device: torch.device) -> list[PathTimes]:
    """Time each (name, fn) of `paths`: its first call alone, `warmup` more calls untimed, then `rounds` rounds of
    `calls` calls, the paths in turn within each round."""
    times = []
    for name, fn in paths:
        first = seconds_per_call(fn, 1, device)
        for _ in range(warmup):
            fn()
        times.append(PathTimes(name, first))
    for _ in range(rounds):
        for (_, fn), path_times in zip(paths, times):
            path_times.rounds.append(seconds_per_call(fn, calls, device))
    return times


def speedup_over(baseline: PathTimes, path: PathTimes) -> float:
    """How many times faster `path` runs than `baseline`: the median over rounds of baseline / path."""
    return statistics.median(b / p for b, p in zip(baseline.rounds, path.rounds))
