"""Numerical precision: fp32 weights and optimizer states, TF32 matmuls, optional bf16 autocast."""

from __future__ import annotations

import contextlib

import torch

from raedit.core.errors import RaeditError

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def configure_matmul_precision(tf32: bool = True) -> None:
    """Let fp32 matmuls and convolutions use TF32 tensor cores (no effect on CPU) or forbid it."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def autocast_context(device: torch.device, mode: str = "fp32") -> contextlib.AbstractContextManager:
    """A context for forward passes: nothing for "fp32", `torch.autocast` to bfloat16 for "bf16"."""
    if mode not in AUTOCAST_DTYPES:
        raise RaeditError(f"unknown autocast mode '{mode}'; choose one of {', '.join(AUTOCAST_DTYPES)}")
    dtype = AUTOCAST_DTYPES[mode]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
