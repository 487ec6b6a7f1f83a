"""Speed switches that leave the computed function unchanged: `torch.compile` with a clean fallback to eager, and
the choice of the scaled-dot-product attention kernel.

A model compiles as one graph ("model") or block by block ("blocks", regional compilation: N identical transformer
blocks compile once, and the layers between them run eagerly). docs/benchmarks/ has what each costs and gains.

`torch.compile` compiles lazily, at the first call. When no compiler works there (no C++ compiler for CPU code, no
Triton for CUDA, an unsupported op), that first call fails; `compile_or_eager` then logs one line and runs the
function eagerly from then on. Errors of the function itself (a wrong shape, a `RaeditError`) are raised as they are.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from raedit.core.errors import RaeditError, first_line

logger = logging.getLogger(__name__)

# How `compile_module` compiles a model: not at all, as one graph, or block by block.
COMPILE_MODES = ("none", "model", "blocks")
# SDPA kernels by name; "auto" lets PyTorch choose (flash for bf16/fp16 on CUDA, memory-efficient for fp32).
ATTENTION_BACKENDS: dict[str, SDPBackend | None] = {
    "auto": None,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def _compiler_failed(error: BaseException) -> bool:
    """Whether `error` is torch.compile failing to compile (not the compiled function's own error)."""
    from torch._dynamo import exc

    return isinstance(error, (exc.BackendCompilerFailed, exc.InternalTorchDynamoError))


class CompiledOrEager:
    """`fn` compiled by `torch.compile`, falling back to `fn` itself, with one log line, if compiling fails."""

    def __init__(self, fn: Callable[..., Any], what: str, **compile_options: Any) -> None:
        self.eager = fn
        self.compiled: Callable[..., Any] | None = torch.compile(fn, **compile_options)
        self.what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:
                if not _compiler_failed(error):
                    raise
                self.compiled = None
                logger.warning("torch.compile of %s failed, running it eagerly: %s", self.what, first_line(error))
        return self.eager(*args, **kwargs)

    @property
    def is_compiled(self) -> bool:
        """False once compiling has failed and the function runs eagerly."""
        return self.compiled is not None


def compile_or_eager(fn: Callable[..., Any], what: str, **compile_options: Any) -> CompiledOrEager:
    """`torch.compile(fn, **compile_options)` with a fallback to eager (see the module docstring); `what` names
    the function in the one-line message."""
    return CompiledOrEager(fn, what, **compile_options)


def repeated_blocks(module: nn.Module) -> list[nn.Module]:
    """The items of `module`'s ModuleLists (and of its Sequentials of more than one item) that are all of one class:
    its transformer blocks, outermost first (blocks inside a block are not listed again)."""
    blocks: list[nn.Module] = []
    inside: list[str] = []
    for name, child in module.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        of_one_class = len({type(item) for item in child.children()}) == 1
        if of_one_class and (isinstance(child, nn.ModuleList) or (isinstance(child, nn.Sequential) and len(child) > 1)):
            blocks.extend(child)
            inside.append(f"{name}." if name else "")
    return blocks


def compile_module(module: nn.Module, what: str, mode: str = "model", entry: str = "forward",
                   **compile_options: Any) -> nn.Module:
    """Compile `module` in place, with the fallback of `compile_or_eager`. mode "model": its method `entry` (the
    forward) as one graph; "blocks": each of its repeated blocks (`repeated_blocks`), or `entry` when it has none;
    "none": nothing. State dict keys, hooks and wrappers (DDP, FSDP2) stay as they are; compiled parts are left
    alone. Returns the module."""
    if mode not in COMPILE_MODES:
        raise RaeditError(f"unknown compile mode '{mode}'; choose one of {', '.join(COMPILE_MODES)}")
    if mode == "none":
        return module
    parts = [(block, "forward") for block in repeated_blocks(module)] if mode == "blocks" else []
    for part, name in parts or [(module, entry)]:
        if not isinstance(part.__dict__.get(name), CompiledOrEager):
            setattr(part, name, compile_or_eager(getattr(part, name), what, **compile_options))
    return module


def is_compiled(module: nn.Module) -> bool:
    """Whether `module` runs compiled code: it or a block of it was compiled, and compiling has not failed."""
    wrappers = [value for part in module.modules() for value in vars(part).values()
                if isinstance(value, CompiledOrEager)]
    return bool(wrappers) and all(wrapper.is_compiled for wrapper in wrappers)


def check_attention_backend(name: str) -> str:
    if name not in ATTENTION_BACKENDS:
        raise RaeditError(f"unknown attention backend '{name}'; choose one of {', '.join(ATTENTION_BACKENDS)}")
    return name


@contextlib.contextmanager
def attention_backend(name: str = "auto") -> Iterator[None]:
    """Within the context, `F.scaled_dot_product_attention` uses kernel `name` (see `ATTENTION_BACKENDS`); a kernel
    the inputs don't support there is PyTorch's error at the first attention call. "auto": PyTorch's choice."""
    backend = ATTENTION_BACKENDS[check_attention_backend(name)]
    if backend is None:
        yield
        return
    with sdpa_kernel(backend):
        yield
