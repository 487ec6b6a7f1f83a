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
    """One path's seconds per call in each round, its first call (compiling included), and on CUDA the device
    memory it took at its peak (its models, optimizer states and activations; None elsewhere)."""

    name: str
    first_call_s: float
    rounds: list[float] = field(default_factory=list)
    peak_memory_bytes: int | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.rounds)


def alternate(builders: Sequence[tuple[str, Callable[[], Callable[[], object]]]], rounds: int, calls: int,
              warmup: int, device: torch.device) -> list[PathTimes]:
    """Time the paths of `builders` ((name, build), build() -> the call to time): each is built and makes its
    first call (timed alone) and `warmup` more before the next is built, so that its peak memory is its own; then
    `rounds` rounds of `calls` calls, the paths in turn within each round."""
    times, calls_of = [], []
    for name, build in builders:
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fn = build()
        first = seconds_per_call(fn, 1, device)
        for _ in range(warmup):
            fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else None
        times.append(PathTimes(name, first, peak_memory_bytes=peak))
        calls_of.append(fn)
    for _ in range(rounds):
        for fn, path_times in zip(calls_of, times):
            path_times.rounds.append(seconds_per_call(fn, calls, device))
    return times


def speedup_over(baseline: PathTimes, path: PathTimes) -> float:
    """How many times faster `path` runs than `baseline`: the median over rounds of baseline / path."""
    return statistics.median(b / p for b, p in zip(baseline.rounds, path.rounds))
