"""The peak matmul rates that model FLOP utilization (MFU) is measured against, by device name.

Dense (no 2:4 sparsity) tensor-core rates from NVIDIA's data sheets, in TFLOP/s, for bf16 inputs and for fp32
inputs on TF32 tensor cores (what fp32 matmuls use when `precision.tf32` is on, the default). Without TF32, fp32
matmuls run at the plain fp32 rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raedit.core.errors import RaeditError


@dataclass(frozen=True)
class PeakRates:
    bf16: float
    tf32: float
    fp32: float


# Matched in this order against the CUDA device name: the first name it contains wins.
PEAK_TFLOPS: dict[str, PeakRates] = {
    "H200": PeakRates(bf16=989.4, tf32=494.7, fp32=66.9),
    "H100 PCIe": PeakRates(bf16=756.0, tf32=378.0, fp32=51.2),
    "H100": PeakRates(bf16=989.4, tf32=494.7, fp32=66.9),  # SXM
    "H800": PeakRates(bf16=989.4, tf32=494.7, fp32=66.9),
    "A100": PeakRates(bf16=312.0, tf32=156.0, fp32=19.5),
    "L40S": PeakRates(bf16=362.1, tf32=183.0, fp32=91.6),
}


def device_name(device: torch.device) -> str:
    """The device's marketing name (CUDA), or "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def peak_tflops(name: str, precision: str, tf32: bool = True) -> float | None:
    """The peak dense rate of device `name` for matmuls in `precision` ("bf16" | "fp32"), None when unknown (CPUs:
    give `--peak-tflops`). fp32 counts at the TF32 rate when `tf32` matmuls are allowed."""
    if precision not in ("bf16", "fp32"):
        raise RaeditError(f"unknown precision '{precision}'; choose bf16 or fp32")
    for known, rates in PEAK_TFLOPS.items():
        if known in name:
            if precision == "bf16":
                return rates.bf16
            return rates.tf32 if tf32 else rates.fp32
    return None
