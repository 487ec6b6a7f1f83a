"""Independent CPU-bound jobs at the same time, one process each with an equal share of the cores (small models
use one core better than two: the demo's two stages, an experiment's two decoders)."""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch


def _in_worker(threads: int, level: int) -> None:
    """Each process takes its share of the cores and logs like the parent."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _timed(function: Callable[[Any], Any], argument: Any) -> float:
    started = time.perf_counter()
    function(argument)
    return time.perf_counter() - started


def run_side_by_side(jobs: list[tuple[Callable[[Any], Any], Any]]) -> list[float]:
    """Run each `(function, argument)` in its own spawned process (both must pickle: a module-level function and
    plain data), with `torch.get_num_threads() // len(jobs)` threads (at least 1) each; returns each job's wall
    seconds, in order (what a job makes, it writes to disk). An exception in a job is raised here once all have
    ended."""
    threads = max(1, torch.get_num_threads() // len(jobs))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(jobs), mp_context=context, initializer=_in_worker,
                             initargs=(threads, logging.getLogger().getEffectiveLevel())) as pool:
        futures = [pool.submit(_timed, function, argument) for function, argument in jobs]
        return [future.result() for future in futures]
