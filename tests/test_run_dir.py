"""A run directory belongs to one run: a new run never writes over another's checkpoints or export, `--fresh`
moves the old run aside, and a lock keeps a second process out (a dead process's lock is taken over, reported)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stage2_helpers import TINY_MODEL, make_setup

from raedit.cli import main
from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.train.run_dir import LOCK_FILE
from raedit.train.stage2 import Stage2Config, train_diffusion


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    return make_setup(tmp_path_factory.mktemp("run_dir"), count=32)


def settings(setup, run_dir: Path, *extra: str) -> list[str]:
    return [f"rae={setup['rae']}", f"latents={setup['cache']}", f"run_dir={run_dir}", "train.micro_batch_size=16",
            "train.logging.tensorboard=false", "train.logging.progress_bar=false", "preview.images=0",
            "train.checkpoint.every_steps=2", "train.checkpoint.keep_last=2", *TINY_MODEL, *extra]


def export_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_a_new_run_in_a_finished_runs_directory_is_refused_and_the_export_kept(setup, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_diffusion(load_config(Stage2Config, None, settings(setup, run_dir, "train.epochs=3")))
    finished = export_weights(run_dir)
    checkpoints = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    # Before: this ran, wrote its export over the finished run's and lost its own checkpoints to the old ones.
    code = main(["train", "stage2/demo", *settings(setup, run_dir, "train.epochs=1", "train.stop_after_steps=1")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{run_dir} holds another run" in err and "--resume" in err and "--fresh" in err
    assert all(torch.equal(export_weights(run_dir)[key], value) for key, value in finished.items())
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == checkpoints
    assert not (run_dir / LOCK_FILE).exists()  # released at the end of the finished run


def test_fresh_moves_the_old_run_aside(setup, tmp_path):
    run_dir = tmp_path / "run"
    train_diffusion(load_config(Stage2Config, None, settings(setup, run_dir, "train.epochs=2")))
    old = export_weights(run_dir)
    train_diffusion(load_config(Stage2Config, None, settings(setup, run_dir, "train.epochs=1", "train.seed=5")),
                    fresh=True)
    (moved,) = [path for path in tmp_path.iterdir() if path.name.startswith("run.replaced-")]
    assert all(torch.equal(export_weights(moved)[key], value) for key, value in old.items())
    assert not all(torch.equal(export_weights(run_dir)[key], value) for key, value in old.items())
    with pytest.raises(RaeditError, match="give one"):
        train_diffusion(load_config(Stage2Config, None, settings(setup, run_dir)), resume=True, fresh=True)


def lock(run_dir: Path, host: str, pid: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).write_text(json.dumps({"host": host, "pid": pid, "since": 0}))


def test_a_live_lock_refuses_and_a_dead_processes_lock_is_taken_over(setup, tmp_path, caplog):
    run_dir = tmp_path / "run"
    config = load_config(Stage2Config, None, settings(setup, run_dir, "train.epochs=1"))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock(run_dir, socket.gethostname(), live.pid)  # a live process
        with pytest.raises(RaeditError, match=rf"{run_dir} is being written by process {live.pid}"):
            train_diffusion(config, resume=True)
    finally:
        live.kill()
        live.wait()
    lock(run_dir, "another-host", 12345)  # can't be checked from here
    with pytest.raises(RaeditError, match="is being written by process 12345 on another-host"):
        train_diffusion(config, resume=True)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock(run_dir, socket.gethostname(), int(finished.stdout))  # a killed run's lock: its process is gone
    result = train_diffusion(config, resume=True)
    assert result.reason == "finished" and (run_dir / "model" / "model.safetensors").is_file()
    assert "which no longer runs (killed?): taking it over" in caplog.text
    assert not (run_dir / LOCK_FILE).exists()
