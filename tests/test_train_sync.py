"""The loop's sync points under torchrun (two CPU processes): a stop signal that only rank 0 receives stops both
ranks at the next sync point, and an EMA that holds its averages in a sharded twin of the model averages exactly
like one that keeps them as tensors of their own (DDP and FSDP2).

Run by torchrun, this file is the worker: `python -m torch.distributed.run --nproc_per_node 2 THIS OUT_DIR`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

SIGNALLED_AT, SYNC_EVERY = 2, 4


def _worker(out_dir: Path) -> None:
    from train_toy import build_loop, toy_config

    from raedit.core.distributed import init_distributed, shutdown_distributed

    ctx = init_distributed(backend="gloo", device="cpu")
    report = {}
    for strategy in ("ddp", "fsdp"):
        settings = {"distributed.strategy": strategy, "logging.every_steps": SYNC_EVERY}
        held = build_loop(out_dir / strategy / "held", toy_config(epochs=50, **settings), ctx=ctx, dropout=0.0,
                          ema_in_module=True)

        def signal_rank_0(loop) -> None:
            if ctx.rank == 0 and loop.progress.step == SIGNALLED_AT:
                os.kill(os.getpid(), signal.SIGTERM)

        held.on_step_end = signal_rank_0
        result = held.run()
        plain = build_loop(out_dir / strategy / "plain", toy_config(epochs=50, stop_after_steps=result.progress.step,
                                                                   **settings), ctx=ctx, dropout=0.0)
        plain.run()
        averages, expected = held.phases[0].ema.state_dict(), plain.phases[0].ema.state_dict()
        report[strategy] = {"reason": result.reason, "step": result.progress.step,
                            "ema_equal": all(torch.equal(averages[k], expected[k]) for k in expected),
                            "ema": {k: v.tolist() for k, v in averages.items()},
                            "sharded": all(hasattr(p, "device_mesh") for p in held.phases[0].ema.average.parameters())}
    (out_dir / f"rank{ctx.rank}.json").write_text(json.dumps(report))
    shutdown_distributed()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # gloo's worker threads can abort at interpreter exit after all the work is done


def test_a_signal_on_one_rank_stops_all_at_the_next_sync_point_and_the_held_ema_is_exact(tmp_path):
    from torchrun import run_torchrun

    result = run_torchrun(__file__, str(tmp_path), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for strategy in ("ddp", "fsdp"):
        for rank in ranks:
            assert (rank[strategy]["reason"], rank[strategy]["step"]) == ("interrupted", SYNC_EVERY), strategy
            assert rank[strategy]["ema_equal"], strategy
        assert ranks[0][strategy]["ema"] == ranks[1][strategy]["ema"]
        assert [rank[strategy]["sharded"] for rank in ranks] == [strategy == "fsdp"] * 2  # shards, like the model
        checkpoints = tmp_path / strategy / "held" / "checkpoints"
        assert [p.name for p in checkpoints.iterdir()] == [f"step-{SYNC_EVERY:08d}"]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    _worker(Path(sys.argv[1]))
