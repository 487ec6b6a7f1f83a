"""Two processes under torchrun (gloo, CPU): averaged gradients, distinct data shards, one checkpoint.

Run by torchrun, this file is the worker: `python -m torch.distributed.run --nproc_per_node 2 THIS OUT_DIR`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from raedit.train.loop import steps_per_epoch
from raedit.train.optim import build_adamw
from raedit.train.schedules import build_schedule

STEPS = 3
STRATEGIES = ("ddp", "fsdp")


def _config(strategy: str):
    from train_toy import toy_config

    return toy_config(stop_after_steps=STEPS, **{"distributed.strategy": strategy})


def _full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from raedit.train.parallel import unwrap_model

    state = unwrap_model(model).state_dict()
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}


def _worker(out_dir: Path) -> None:
    from train_toy import build_loop

    from raedit.core.distributed import init_distributed, shutdown_distributed

    ctx = init_distributed(backend="gloo", device="cpu")
    for strategy in STRATEGIES:
        seen: list[list[int]] = []
        holder = {}

        def loss_fn(batch, step_ctx):
            index, x, y = batch
            seen.append([step_ctx.step, *index.tolist()])
            return (holder["model"](x) - y).pow(2).mean(), {}

        # Each rank initializes differently: the wrapper must start every rank (and its EMA) from rank 0's weights.
        loop = build_loop(
            out_dir / strategy / "run", _config(strategy), ctx=ctx, dropout=0.0, loss_fn=loss_fn, model_seed=ctx.rank
        )
        holder["model"] = loop.phases[0].model
        all_reduces = []
        if strategy == "ddp":  # count DDP's gradient all-reduces (buckets) to see that no_sync skips them
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            def counting_hook(state, bucket):
                all_reduces.append(bucket.index())
                return allreduce_hook(state, bucket)

            loop.phases[0].model.register_comm_hook(None, counting_hook)
        loop.run()
        weights = _full_state(loop.phases[0].model)
        ema = loop.phases[0].ema.state_dict()
        # A fresh loop on the same run directory resumes every rank to the same state.
        resumed = build_loop(out_dir / strategy / "run", _config(strategy), ctx=ctx, dropout=0.0, loss_fn=loss_fn)
        resumed.resume()
        resumed_ema = resumed.phases[0].ema.state_dict()
        resumed_weights = _full_state(resumed.phases[0].model)
        resume_equal = all(torch.equal(weights[k], resumed_weights[k]) for k in weights)
        resume_equal &= all(torch.equal(ema[k], resumed_ema[k]) for k in ema)
        resume_equal &= resumed.phases[0].scheduler.last_step == STEPS and resumed.progress.step == STEPS
        (out_dir / strategy / f"rank{ctx.rank}.json").write_text(json.dumps({
            "seen": seen,
            "all_reduces": len(all_reduces),
            "resume_equal": bool(resume_equal),
            "weights": {k: v.tolist() for k, v in weights.items()},
            "ema": {k: v.tolist() for k, v in ema.items()},
        }))
    shutdown_distributed()
    # Leave without interpreter finalization: gloo's worker threads can otherwise abort the process
    # ("terminate called without an active exception") after all the work above is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _reference_weights(seen_by_rank: list[list[list[int]]], strategy: str) -> dict[str, torch.Tensor]:
    """One process, one batch per step made of what both ranks read in that step."""
    from train_toy import ToyData, toy_model

    config = _config(strategy)
    data, model = ToyData(), toy_model()
    optimizer = build_adamw(model.parameters(), config.optim)
    schedule = build_schedule(optimizer, config.schedule, steps_per_epoch(len(data), config, 2), config.epochs)
    for step in range(STEPS):
        indices = [i for rank in seen_by_rank for entry in rank if entry[0] == step for i in entry[1:]]
        optimizer.zero_grad()
        _, x, y = data[torch.tensor(indices)]
        (model(x) - y).pow(2).mean().backward()
        optimizer.step()
        schedule.step()
    return model.state_dict()


def test_two_processes_average_gradients_shard_data_and_write_one_checkpoint(tmp_path):
    from torchrun import run_torchrun

    result = run_torchrun(__file__, str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for strategy in STRATEGIES:
        ranks = [json.loads((tmp_path / strategy / f"rank{r}.json").read_text()) for r in range(2)]
        # Each rank read its own shard: 3 steps x 2 micro-batches x 4 items, no item on both ranks.
        per_rank = [[i for entry in rank["seen"] for i in entry[1:]] for rank in ranks]
        assert [len(items) for items in per_rank] == [24, 24]
        assert not set(per_rank[0]) & set(per_rank[1])
        # Identical weights and EMAs on both ranks, equal to one process stepping on both ranks' data.
        weights = [{k: torch.tensor(v) for k, v in rank["weights"].items()} for rank in ranks]
        reference = _reference_weights([rank["seen"] for rank in ranks], strategy)
        for key in reference:
            assert torch.equal(weights[0][key], weights[1][key]), (strategy, key)
            torch.testing.assert_close(weights[0][key], reference[key], rtol=1e-5, atol=1e-6)
        assert ranks[0]["ema"] == ranks[1]["ema"]
        assert [rank["resume_equal"] for rank in ranks] == [True, True]
        if strategy == "ddp":  # one all-reduce per optimizer step (the model fits one bucket), not per micro-batch
            assert [rank["all_reduces"] for rank in ranks] == [STEPS, STEPS]
        # One checkpoint, by rank 0, holding those weights.
        checkpoints = tmp_path / strategy / "run" / "checkpoints"
        assert [p.name for p in checkpoints.iterdir()] == [f"step-{STEPS:08d}"]
        saved = load_file(str(checkpoints / f"step-{STEPS:08d}" / "model-model.safetensors"))
        assert all(torch.equal(saved[k], weights[0][k]) for k in reference)
        state = json.loads((checkpoints / f"step-{STEPS:08d}" / "state.json").read_text())
        assert len(state["rng"]) == 2 and state["rng"][0] != state["rng"][1]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    _worker(Path(sys.argv[1]))
