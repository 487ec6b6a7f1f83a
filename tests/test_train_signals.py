"""SIGTERM and Ctrl-C (SIGINT) during training write a checkpoint before the process exits.

Run as a script, this file is the training process the test signals: `python test_train_signals.py RUN_DIR`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from raedit.train.checkpoint import latest_checkpoint

TOTAL_EPOCHS = 1000


def _train(run_dir: str) -> None:
    from train_toy import build_loop, noisy_mse, toy_config

    holder = {}

    def slow_loss(batch, ctx):
        time.sleep(0.01)
        return noisy_mse(batch, ctx, holder["model"])

    loop = build_loop(run_dir, toy_config(epochs=TOTAL_EPOCHS), loss_fn=slow_loss)
    holder["model"] = loop.phases[0].model

    def announce(loop) -> None:
        if loop.progress.step == 3:
            (Path(run_dir) / "started").write_text("")

    loop.on_step_end = announce
    result = loop.run()
    weights = {k: v.tolist() for k, v in loop.phases[0].model.state_dict().items()}
    print(json.dumps({"reason": result.reason, "signal": result.signal_name, "step": result.progress.step,
                      "weights": weights}))
    sys.exit(128 + signal.Signals[result.signal_name].value if result.signal_name else 0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_writes_a_checkpoint_then_exits(tmp_path, signum):
    process = subprocess.Popen(
        [sys.executable, __file__, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the training process did not start"
        time.sleep(0.05)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum.value, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["reason"] == "interrupted" and report["signal"] == signum.name
    assert 3 <= report["step"] < 8 * TOTAL_EPOCHS
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    assert checkpoint is not None and checkpoint.name == f"step-{report['step']:08d}"
    saved = load_file(str(checkpoint / "model-model.safetensors"))
    assert {k: v.tolist() for k, v in saved.items()} == report["weights"]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    _train(sys.argv[1])
