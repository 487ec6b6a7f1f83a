"""Kill-safety of every writer: `raedit train`, `cache-latents`, `stats` and `sample` run as processes that are
killed with SIGKILL at random points (seeded, `TRIALS` per job, spread over the job's uninterrupted wall time),
then run again (training with `--resume`). The second run must end with exactly what an uninterrupted run writes,
and no output may ever be half-written: after each kill, every final output is absent or complete.

A full disk: a checkpoint write that raises ENOSPC stops training with one line, and the checkpoints before it
stay as they were."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from stage2_helpers import TINY_MODEL, make_setup

from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.train.checkpoint import latest_checkpoint
from raedit.train.stage2 import Stage2Config, train_diffusion

TRIALS = 4
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    return make_setup(tmp_path_factory.mktemp("kill"), count=32)


def train_argv(setup, run_dir: Path) -> list[str]:
    return ["train", "stage2/demo", f"rae={setup['rae']}", f"latents={setup['cache']}", f"run_dir={run_dir}",
            "latent_shape=null", "train.micro_batch_size=4", "train.epochs=3", "train.checkpoint.every_steps=3",
            "train.schedule.warmup_epochs=0", "train.schedule.decay_start_epoch=1", "train.schedule.decay_end_epoch=3",
            "train.logging.tensorboard=false", "train.logging.progress_bar=false", "preview.images=0", *TINY_MODEL]


def cache_argv(out: Path) -> list[str]:
    return ["cache-latents", "stage2/cache_demo", "autoencoder.encoder_input_size=32", "data.resolution=32",
            "data.limit=160", "shard_size=8", "batch_size=8", f"out={out}"]


def stats_argv(out: Path) -> list[str]:
    return ["stats", "stats/effnet-lite0_fashion-mnist", "data.limit=640", "data.resolution=32", "batch_size=8",
            "autoencoder.encoder_input_size=32", f"out={out}"]


def sample_argv(model: Path, out: Path) -> list[str]:
    return ["sample", "--ckpt", str(model), "--num", "64", "--batch-size", "4", "--steps", "8", "--out", str(out),
            "--grid", ""]


def run(argv: list[str], kill_after: float | None = None, once: Callable[[], bool] | None = None) -> float:
    """Run `raedit ARGV` as a process and return its wall time. With `kill_after`, SIGKILL it that many seconds
    after it started, or, with `once`, after `once()` first holds (its work has begun), if it still runs."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "raedit.cli", *argv], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        while once is not None and not once() and process.poll() is None:
            time.sleep(0.01)
        counted_from = time.perf_counter() if once is not None else started
        try:
            process.wait(timeout=max(kill_after - (time.perf_counter() - counted_from), 0))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        process.communicate()
        return time.perf_counter() - started
    _, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    return time.perf_counter() - started


def kill_points(job: str, window: float) -> list[float]:
    """Seeded random moments within `window` seconds."""
    moments = [random.Random(f"{job}-{trial}").uniform(0, window) for trial in range(TRIALS)]
    print(f"{job}: SIGKILL at {', '.join(f'{m:.2f}' for m in moments)} s into a {window:.2f} s window")  # with -s
    return moments


def same_tensors(a: Path, b: Path) -> bool:
    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_training_killed_anywhere_resumes_to_the_uninterrupted_result(setup, tmp_path):
    """Killed at random moments after its run directory appears (models built, training under way)."""
    duration = run(train_argv(setup, tmp_path / "reference"))
    reference = tmp_path / "reference" / "model" / "model.safetensors"
    for trial, moment in enumerate(kill_points("train", 0.3 * duration)):
        run_dir = tmp_path / f"killed{trial}"
        run(train_argv(setup, run_dir), kill_after=moment, once=(run_dir / "config.yaml").exists)
        export = run_dir / "model" / "model.safetensors"
        assert not export.exists() or same_tensors(export, reference), f"half-written export (kill at {moment:.2f} s)"
        checkpoints = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
        print(f"train: killed with checkpoints {checkpoints}, export {'written' if export.exists() else 'not yet'}")
        run([*train_argv(setup, run_dir), "--resume"])  # a killed run's lock is taken over
        assert same_tensors(export, reference), f"kill at {moment:.2f} s"
        assert not (run_dir / ".lock").exists()


def test_latent_caching_killed_anywhere_completes_to_the_same_cache(tmp_path):
    """Killed at random moments after its first shard is on disk."""
    duration = run(cache_argv(tmp_path / "reference"))
    shards = sorted(path.name for path in (tmp_path / "reference").glob("shard-*.safetensors"))
    for trial, moment in enumerate(kill_points("cache", 0.2 * duration)):
        out = tmp_path / f"killed{trial}"
        run(cache_argv(out), kill_after=moment, once=lambda: (out / "shard-00000.safetensors").exists())
        written = [name for name in shards if (out / name).exists()]
        print(f"cache: {len(written)} of {len(shards)} shards on disk after the kill at {moment:.2f} s")
        for name in written:  # every shard on disk after the kill is complete
            assert same_tensors(out / name, tmp_path / "reference" / name)
        run(cache_argv(out))
        assert all(same_tensors(out / name, tmp_path / "reference" / name) for name in shards), f"kill at {moment:.2f}"
        assert (out / "manifest.json").read_text() == (tmp_path / "reference" / "manifest.json").read_text()


def test_statistics_killed_anywhere_are_absent_or_complete(tmp_path):
    duration = run(stats_argv(tmp_path / "reference.safetensors"))
    for trial, moment in enumerate(kill_points("stats", duration)):
        out = tmp_path / f"killed{trial}.safetensors"
        run(stats_argv(out), kill_after=moment)
        assert not out.exists() or same_tensors(out, tmp_path / "reference.safetensors")
        run(stats_argv(out))
        assert same_tensors(out, tmp_path / "reference.safetensors"), f"kill at {moment:.2f}"


def test_sampling_killed_anywhere_is_absent_or_complete(setup, tmp_path):
    run(train_argv(setup, tmp_path / "run"))
    duration = run(sample_argv(tmp_path / "run", tmp_path / "reference.npz"))
    reference = np.load(tmp_path / "reference.npz")["arr_0"]
    for trial, moment in enumerate(kill_points("sample", duration)):
        out = tmp_path / f"killed{trial}.npz"
        run(sample_argv(tmp_path / "run", out), kill_after=moment)
        assert not out.exists() or np.array_equal(np.load(out)["arr_0"], reference)
        run(sample_argv(tmp_path / "run", out))
        assert np.array_equal(np.load(out)["arr_0"], reference), f"kill at {moment:.2f}"


def test_a_full_disk_stops_training_with_one_line_and_keeps_the_last_checkpoint(setup, tmp_path, monkeypatch):
    """safetensors reports a full disk as its own error type, "IoError(Os { code: 28 ... })"."""
    from raedit.core import files

    run_dir = tmp_path / "run"
    write = files.save_file

    def fills_the_disk_at_the_second_checkpoint(tensors, filename, *args, **kwargs):
        if "step-00000006" in str(filename):
            raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                               'space left on device" })')
        return write(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(files, "save_file", fills_the_disk_at_the_second_checkpoint)
    config = load_config(Stage2Config, None, train_argv(setup, run_dir)[2:])
    with pytest.raises(RaeditError, match="no space left on the device writing checkpoint .*step-00000006") as error:
        train_diffusion(config)
    assert "\n" not in str(error.value)
    assert latest_checkpoint(run_dir / "checkpoints").name == "step-00000003"  # complete, as it was
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["step-00000003"]  # no temporary left
    assert not (run_dir / ".lock").exists()
