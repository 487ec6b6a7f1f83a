"""Reading a state dict from a file: safetensors, or a PyTorch pickle loaded with `weights_only=True`."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from raedit.errors import RaeditError


def read_state_dict(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """The tensors of `path` (.safetensors, or .pt/.pth); a missing or unreadable file is a `RaeditError`
    naming `what` and the path."""
    path = Path(path)
    if not path.is_file():
        raise RaeditError(f"{what} file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for a bad header
            raise RaeditError(f"cannot read {what} from {path}: {str(error).splitlines()[0]}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise RaeditError(f"cannot read {what} from {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise RaeditError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
