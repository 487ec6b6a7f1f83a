"""Files on disk: every artifact is written whole or not at all, and state dicts are read safely.

`atomic_path` is the one write-then-rename of raedit: data goes to a hidden temporary file beside the target and
is renamed onto it only when complete, so a crash or kill never leaves a half-written file under the real name.
Weights, statistics, latent shards, manifests, configs and sample sets are all written through it.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from raedit.core.errors import RaeditError, first_line


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`, with its suffix (numpy and safetensors keep the name as given), to write
    to; renamed onto `path` when the block ends without an error, removed when it raises (a full disk is a
    one-line `RaeditError`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise RaeditError(f"no space left on the device writing {path}: it was not written, and what was there "
                              f"before is unchanged") from None
        raise
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: str | Path, value: Any) -> None:
    """Write `value` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (copied to the CPU, contiguous) as a safetensors file, atomically."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    with atomic_path(path) as temporary:
        write_safetensors(temporary, tensors, metadata)


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, whose full-disk error (its own type, "code: 28") becomes an ENOSPC `OSError`
    like every other write's."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except Exception as error:  # safetensors reports I/O errors as SafetensorError
        if "code: 28" in str(error) or "No space left" in str(error):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from error
        raise


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`; a missing or malformed file, or one holding anything but an object, is a
    `RaeditError` naming `what` and the path."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise RaeditError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as error:
        raise RaeditError(f"{what} {path} is not readable JSON: {first_line(error)}") from None
    if not isinstance(value, dict):
        raise RaeditError(f"{what} {path} holds a JSON {type(value).__name__}, not an object of keys")
    return value


def read_state_dict(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """The tensors of `path` (.safetensors, or .pt/.pth loaded with `weights_only=True`); a missing or
    unreadable file is a `RaeditError` naming `what` and the path."""
    path = Path(path)
    if not path.is_file():
        raise RaeditError(f"{what} file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for a bad header
            raise RaeditError(f"cannot read {what} from {path}: {first_line(error)}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise RaeditError(f"cannot read {what} from {path}: {first_line(error)}") from None
    if not isinstance(state, dict):
        raise RaeditError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
