"""Speed switches that leave the computed function unchanged: `torch.compile` with a clean fallback to eager, and
the choice of the scaled-dot-product attention kernel.

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


def compile_module(module: nn.Module, what: str, **compile_options: Any) -> nn.Module:
    """Compile `module`'s forward in place (its state dict keys, hooks and wrappers stay as they are) with the
    fallback of `compile_or_eager`; a module already compiled is left alone. Returns the module."""
    if not isinstance(module.__dict__.get("forward"), CompiledOrEager):
        module.forward = compile_or_eager(module.forward, what, **compile_options)
    return module


def is_compiled(module: nn.Module) -> bool:
    """Whether `module` runs a compiled forward (it was compiled, and compiling has not failed)."""
    forward = module.__dict__.get("forward")
    return isinstance(forward, CompiledOrEager) and forward.is_compiled


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
