"""Each speed switch computes the same function as the eager fp32 path, within a stated tolerance: torch.compile
(and its fallback), bf16 autocast with fp32 master weights, the SDPA kernels, activation checkpointing, fused AdamW,
and data loading with workers and prefetch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from train_toy import build_loop, toy_config

from raedit.core.acceleration import (
    CompiledOrEager,
    attention_backend,
    compile_module,
    compile_or_eager,
    is_compiled,
    repeated_blocks,
)
from raedit.core.errors import RaeditError
from raedit.diffusion.flow import TimeDistribution, flow_matching_loss
from raedit.models import build_model, model_config
from raedit.train.config import OptimConfig
from raedit.train.optim import build_adamw


def tiny_denoiser(seed: int = 0, name: str = "ditdh-s") -> torch.nn.Module:
    """A small DiT^DH (or LightningDiT) whose zero-initialized layers are made random, so every path matters."""
    head = {"head_width": 48, "head_num_heads": 2} if name == "ditdh-s" else {}
    torch.manual_seed(seed)
    model = build_model(model_config(name, (16, 4, 4), depth=2, width=32, num_heads=2, num_classes=10, **head))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def batch(size: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(size, 16, 4, 4, generator=generator), torch.rand(size, generator=generator),
            torch.randint(10, (size,), generator=generator))


def loss_and_grads(model: torch.nn.Module, seed: int = 3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The flow-matching loss of a fixed batch (label dropout off) and the gradients it leaves."""
    model.zero_grad(set_to_none=True)
    x, _, labels = batch()
    loss = flow_matching_loss(model, x, labels, TimeDistribution(), alpha=2.0,
                              generator=torch.Generator().manual_seed(seed))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_a_denoiser_compiled_block_by_block_trains_and_samples_like_eager():
    """Tolerance: 1e-5 relative (the compiled kernels fuse and reorder float operations)."""
    eager = tiny_denoiser()
    eager.y_embedder.dropout_prob = 0.0
    compiled = tiny_denoiser()
    compiled.y_embedder.dropout_prob = 0.0
    compile_module(compiled, "the test denoiser", "blocks")
    assert repeated_blocks(compiled) == [*compiled.blocks, *compiled.head_blocks]
    assert all(isinstance(vars(block)["forward"], CompiledOrEager) for block in repeated_blocks(compiled))
    loss, grads = loss_and_grads(eager)
    compiled_loss, compiled_grads = loss_and_grads(compiled)
    assert is_compiled(compiled)
    assert relative_error(compiled_loss, loss) < 1e-5
    assert grads.keys() == compiled_grads.keys()
    assert max(relative_error(compiled_grads[name], grads[name]) for name in grads) < 1e-4
    assert set(compiled.state_dict()) == set(eager.state_dict())  # no `_orig_mod.` prefixes: checkpoints unchanged
    with torch.no_grad():
        x, t, labels = batch(seed=5)
        assert relative_error(compiled.eval()(x, t, labels), eager.eval()(x, t, labels)) < 1e-5


NO_COMPILER = """
import logging, torch
import torch._inductor.config as inductor_config
from raedit.core.acceleration import compile_or_eager
inductor_config.cpp.cxx = ("/nonexistent/c++",)
inductor_config.fx_graph_cache = False  # no earlier compiled graph may be reused
logging.basicConfig(level=logging.WARNING, format="%(message)s")

def function(x):
    return torch.tanh(x) * 3 + x.cos()

compiled = compile_or_eager(function, "the test function")
x = torch.randn(7)
torch.testing.assert_close(compiled(x), function(x))
torch.testing.assert_close(compiled(x + 1), function(x + 1))
print("compiled" if compiled.is_compiled else "eager")
"""


def test_compile_falls_back_to_eager_with_one_line_when_no_compiler_works():
    # In a process of its own: inductor remembers a missing compiler for the rest of the process.
    result = subprocess.run([sys.executable, "-c", NO_COMPILER], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["eager"]
    warnings = [line for line in result.stderr.splitlines() if "torch.compile" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("torch.compile of the test function failed, running it eagerly:")
    assert "C++ compiler" in warnings[0]


def test_an_error_of_the_compiled_function_itself_is_raised_as_it_is():
    def refuses(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 3:
            raise RaeditError("wants 3")
        return x * 2

    compiled = compile_or_eager(refuses, "refuses")
    with pytest.raises(RaeditError, match="wants 3"):
        compiled(torch.ones(4))


def test_bf16_keeps_fp32_weights_time_embedding_and_norms_and_stays_close():
    """Tolerance: 3e-2 relative on the velocity (bf16 keeps 8 bits of mantissa); gradients reach fp32 weights."""
    model = tiny_denoiser()
    x, t, labels = batch()
    with torch.no_grad():
        reference = model.eval()(x, t, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.t_embedder(t).dtype == torch.float32
            features = torch.randn(2, 3, 32).mul(torch.logspace(-3, 3, 32)).bfloat16()
            normed = model.blocks[0].norm1(features)  # normalized in fp32, scaled by the fp32 weight
            exact = model.blocks[0].norm1(features.float())
            assert normed.dtype == torch.float32 and relative_error(normed, exact) < 4e-3
            velocity = model(x, t, labels)
    assert velocity.dtype == torch.bfloat16
    assert relative_error(velocity, reference) < 3e-2
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = flow_matching_loss(model, x, labels, TimeDistribution(), alpha=2.0)
    loss.backward()
    assert loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("kernel", ["math", "flash"])
def test_attention_kernels_compute_the_same_function(kernel):
    """Tolerance: 1e-5 relative (the CPU kernels available here: math and flash)."""
    model = tiny_denoiser().eval()
    x, t, labels = batch()
    with torch.no_grad():
        reference = model(x, t, labels)
        with attention_backend(kernel):
            assert relative_error(model(x, t, labels), reference) < 1e-5


def test_an_unknown_attention_kernel_is_a_one_line_error():
    with pytest.raises(RaeditError, match="unknown attention backend 'fast'; choose one of auto, flash"):
        with attention_backend("fast"):
            pass


@pytest.mark.parametrize("name", ["ditdh-s", "dit-s"])
def test_activation_checkpointing_gives_the_same_gradients(name):
    """Tolerance: exact up to 1e-6 (the same operations, run again in the backward pass)."""
    plain = tiny_denoiser(name=name)
    plain.y_embedder.dropout_prob = 0.0
    checkpointed = tiny_denoiser(name=name)
    checkpointed.y_embedder.dropout_prob = 0.0
    checkpointed.checkpoint_activations = True
    loss, grads = loss_and_grads(plain)
    checkpointed_loss, checkpointed_grads = loss_and_grads(checkpointed)
    torch.testing.assert_close(checkpointed_loss, loss, rtol=0, atol=1e-6)
    for key in grads:
        torch.testing.assert_close(checkpointed_grads[key], grads[key], rtol=1e-6, atol=1e-7)


def test_activation_checkpointing_is_refused_for_models_without_it(tmp_path):
    with pytest.raises(RaeditError, match="activation_checkpointing applies to the DiT models"):
        build_loop(tmp_path, toy_config(**{"speed.activation_checkpointing": True}))


def test_fused_adamw_steps_like_the_default_implementation():
    """Tolerance: 2e-5 after three steps of lr 1e-2, 0.2% of one step: Adam divides each gradient by its own
    running size, so the attention key biases, whose true gradient is zero (softmax ignores a shift shared by all
    keys), step by their rounding noise, which the two implementations round differently."""
    models, optimizers = [], []
    for fused in (True, False):
        model = tiny_denoiser()
        model.y_embedder.dropout_prob = 0.0
        optimizer = build_adamw(model.parameters(), OptimConfig(lr=1e-2, fused=fused))
        models.append(model)
        optimizers.append(optimizer)
    assert optimizers[0].defaults["fused"] and not optimizers[1].defaults["fused"]
    for step in range(3):
        for model, optimizer in zip(models, optimizers):
            loss_and_grads(model, seed=step)
            optimizer.step()
    for (name, fused_param), plain_param in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(fused_param, plain_param, rtol=0, atol=2e-5, msg=name)


def final_weights(loop) -> dict[str, torch.Tensor]:
    loop.run()
    return {name: value.clone() for name, value in loop.phases[0].model.state_dict().items()}


def test_the_loop_compiles_its_model_and_trains_as_eager(tmp_path):
    """Tolerance: 1e-5 on the weights after 8 steps."""
    eager = final_weights(build_loop(tmp_path / "eager", toy_config(), dropout=0.0))
    loop = build_loop(tmp_path / "compiled", toy_config(**{"speed.compile": "model"}), dropout=0.0)
    compiled = final_weights(loop)
    assert is_compiled(loop.phases[0].model)
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-5)


def test_data_workers_with_prefetch_train_exactly_as_the_main_process(tmp_path):
    in_process = final_weights(build_loop(tmp_path / "main", toy_config(), dropout=0.0))
    workers = final_weights(build_loop(tmp_path / "workers", toy_config(num_workers=2, **{"speed.prefetch_factor": 3}),
                                       dropout=0.0))
    for name in in_process:
        torch.testing.assert_close(workers[name], in_process[name], rtol=0, atol=0)
