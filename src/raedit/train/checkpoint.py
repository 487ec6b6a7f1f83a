"""Training checkpoints: one directory per save, written atomically, tensors as safetensors, the rest JSON.

Layout of `checkpoints/step-00001200/`:
    model-<name>.safetensors      weights of each model (full, gathered under FSDP2)
    ema-<name>.safetensors        EMA shadows
    optimizer-<name>.safetensors  optimizer tensors (moments, step counts)
    state.json                    progress (step, epoch, micro-batches into the epoch), scheduler states,
                                  the optimizers' non-tensor parts, every rank's RNG states, user extras
    config.yaml                   the resolved config of the run
    (extra files)                 text files the run adds, e.g. stage 2's `model_config.json` (the denoiser's
                                  description, so a checkpoint loads as a denoiser)
    manifest.json                 byte size of each file above; written last

Every file goes into a hidden temporary directory that is renamed (`os.replace`) into place only once all of
it is on disk, so a crash during a save leaves the earlier checkpoints as they were. `latest_checkpoint`
checks the manifest, sizes and headers, and skips (with a warning) a checkpoint that does not pass.
Nothing is read with `torch.load`.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from raedit.core.distributed import DistContext, all_gather_objects, barrier
from raedit.core.errors import RaeditError, first_line
from raedit.core.files import write_safetensors
from raedit.train.ema import EMA
from raedit.train.parallel import FULL_STATE, full_state_dict
from raedit.train.schedules import LRSchedule

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"
_TENSOR_KEY = "__tensor__"


@dataclass
class Progress:
    """How far training got: optimizer steps done, the current epoch and micro-batches consumed in it."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # JSON values the caller wants back on resume


@dataclass
class TrainComponents:
    """What a checkpoint holds besides progress. Optimizers, schedulers and EMAs are keyed by the name of
    the model they belong to (e.g. "generator", "discriminator")."""

    models: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: dict[str, LRSchedule] = field(default_factory=dict)
    emas: dict[str, EMA] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, table in (("optimizer", self.optimizers), ("scheduler", self.schedulers), ("EMA", self.emas)):
            for name in table:
                if name not in self.models:
                    raise ValueError(f"{kind} '{name}' names no model; models: {sorted(self.models)}")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


# --- tensors out of nested state, and back -------------------------------------------------------------


def _split_tensors(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`obj` with each tensor replaced by {"__tensor__": key}, the tensor stored in `tensors[key]`."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj
        return {_TENSOR_KEY: path}
    if isinstance(obj, dict):
        return {str(k): _split_tensors(v, f"{path}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR_KEY}:
            return tensors[obj[_TENSOR_KEY]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def _savable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no shared storage (safetensors refuses aliases)."""
    out, seen = {}, set()
    for key, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel() > 0:
            tensor = tensor.clone()
        seen.add(pointer)
        out[key] = tensor
    return out


# --- RNG states -----------------------------------------------------------------------------------------


def _bytes_to_text(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _text_to_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA, on a CUDA device) generator states, as JSON values."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_kind, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_cached)],
        "torch": _bytes_to_text(torch.get_rng_state()),
    }
    if device.type == "cuda":
        state["cuda"] = _bytes_to_text(torch.cuda.get_rng_state(device))
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Set the generators from `capture_rng_state`'s output."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = state["numpy"]
    np.random.set_state((np_kind, np.array(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_cached))
    torch.set_rng_state(_text_to_bytes(state["torch"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(_text_to_bytes(state["cuda"]), device)


# --- writing --------------------------------------------------------------------------------------------


def _write_file_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    write_safetensors(path, _savable(tensors))
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(
    directory: str | Path,
    components: TrainComponents,
    progress: Progress,
    ctx: DistContext,
    config_yaml: str = "",
    keep_last: int = 0,
    extra_files: dict[str, str] | None = None,
) -> Path | None:
    """Write a checkpoint of `components` at `progress` into `directory`; call it on every rank.

    Gathering (FSDP2 shards, RNG states) is collective; only rank 0 writes. Returns the checkpoint's path
    on rank 0, None elsewhere. `keep_last` > 0 deletes all but that many newest complete checkpoints.
    """
    directory = Path(directory)
    models = {name: full_state_dict(m) for name, m in components.models.items()}
    optimizers = {
        name: get_optimizer_state_dict(components.models[name], opt, options=FULL_STATE)
        for name, opt in components.optimizers.items()
    }
    emas = {name: ema.state_dict() for name, ema in components.emas.items()}
    rng_states = all_gather_objects(capture_rng_state(ctx.device))
    final: Path | None = None
    if ctx.is_main:
        texts = {"config.yaml": config_yaml, **(extra_files or {})}
        final = _write_checkpoint(directory, components, progress, models, optimizers, emas, rng_states, texts)
        if keep_last > 0:
            _prune(directory, keep_last)
    barrier()
    return final


def _write_checkpoint(
    directory: Path,
    components: TrainComponents,
    progress: Progress,
    models: dict[str, dict[str, torch.Tensor]],
    optimizers: dict[str, dict],
    emas: dict[str, dict[str, torch.Tensor]],
    rng_states: list,
    texts: dict[str, str],
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(_TMP_PREFIX + "*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    final = directory / checkpoint_name(progress.step)
    temporary = directory / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    try:
        temporary.mkdir()
        for name, state in models.items():
            _save_tensors(temporary / f"model-{name}.safetensors", state)
        for name, state in emas.items():
            _save_tensors(temporary / f"ema-{name}.safetensors", state)
        optimizer_skeletons = {}
        for name, state in optimizers.items():
            tensors: dict[str, torch.Tensor] = {}
            optimizer_skeletons[name] = _split_tensors(state, "optimizer", tensors)
            _save_tensors(temporary / f"optimizer-{name}.safetensors", tensors)
        state_json = {
            "format": FORMAT_VERSION,
            "progress": asdict(progress),
            "schedulers": {name: s.state_dict() for name, s in components.schedulers.items()},
            "optimizers": optimizer_skeletons,
            "rng": rng_states,
        }
        _write_file_synced(temporary / "state.json", json.dumps(state_json).encode())
        for name, text in texts.items():
            _write_file_synced(temporary / name, text.encode())
        sizes = {p.name: p.stat().st_size for p in sorted(temporary.iterdir())}
        manifest = {"format": FORMAT_VERSION, "step": progress.step, "files": sizes}
        _write_file_synced(temporary / "manifest.json", json.dumps(manifest, indent=1).encode())
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if error.errno == errno.ENOSPC:
            raise RaeditError(f"no space left on the device writing checkpoint {final}: it was not written; the "
                              f"checkpoints before it are unchanged") from None
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
    log.info("checkpoint written: %s", final)
    return final


def _prune(directory: Path, keep_last: int) -> None:
    for old in complete_checkpoints(directory)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


# --- finding and reading --------------------------------------------------------------------------------


def _candidates(directory: Path) -> list[Path]:
    """Checkpoint directories under `directory`, oldest step first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def complete_checkpoints(directory: str | Path) -> list[Path]:
    """The whole checkpoints under `directory`, oldest step first."""
    return [path for path in _candidates(Path(directory)) if checkpoint_problem(path) is None]


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint at `path` is incomplete or corrupt, or None when it is whole."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"no readable manifest ({type(error).__name__})"
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {size}"
        try:
            if name.endswith(".safetensors"):
                with safe_open(str(file), framework="pt") as handle:
                    handle.keys()
            elif name.endswith(".json"):
                json.loads(file.read_text())
        except Exception as error:  # any parse failure means the file is unusable
            return f"{name} is unreadable ({type(error).__name__})"
    return None


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint in `directory` (a run's checkpoints/ folder), or None.

    A newer one that is truncated or corrupt is skipped with a warning.
    """
    for path in reversed(_candidates(Path(directory))):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("skipping incomplete checkpoint %s: %s", path, problem)
    return None


def load_checkpoint(path: str | Path, components: TrainComponents, ctx: DistContext) -> Progress:
    """Load every component of the checkpoint at `path` into `components` (on every rank) and restore
    this rank's RNG states; returns the saved progress.

    A checkpoint whose models, optimizers, schedulers or EMAs do not match `components` is a RaeditError.
    """
    path = Path(path)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise RaeditError(f"checkpoint {path} is unusable: {problem}")
    state = json.loads((path / "state.json").read_text())
    _check_names(path, "model", components.models, [p.name for p in path.glob("model-*.safetensors")])
    _check_names(path, "optimizer", components.optimizers, list(state["optimizers"]))
    _check_names(path, "scheduler", components.schedulers, list(state["schedulers"]))
    _check_names(path, "EMA", components.emas, [p.name for p in path.glob("ema-*.safetensors")])
    try:
        for name, model in components.models.items():
            weights = load_file(str(path / f"model-{name}.safetensors"))
            set_model_state_dict(model, weights, options=_FULL_LOAD)
        for name, optimizer in components.optimizers.items():
            tensors = load_file(str(path / f"optimizer-{name}.safetensors"))
            saved = _join_tensors(state["optimizers"][name], tensors)
            set_optimizer_state_dict(components.models[name], optimizer, saved, options=_FULL_LOAD)
        for name, ema in components.emas.items():
            ema.load_state_dict(load_file(str(path / f"ema-{name}.safetensors")))
    except (RuntimeError, KeyError, ValueError) as error:
        raise RaeditError(f"checkpoint {path} does not fit this run: {first_line(error)}") from None
    for name, scheduler in components.schedulers.items():
        scheduler.load_state_dict(state["schedulers"][name])
    rng = state["rng"]
    if len(rng) == ctx.world_size:
        restore_rng_state(rng[ctx.rank], ctx.device)
    else:
        log.warning(
            "checkpoint %s was written by %d processes, this run has %d: random states not restored",
            path, len(rng), ctx.world_size,
        )
    progress = Progress(**state["progress"])
    log.info("resumed from %s (step %d, epoch %d)", path, progress.step, progress.epoch)
    return progress


_FULL_LOAD = StateDictOptions(full_state_dict=True, strict=True)


def _check_names(path: Path, kind: str, expected: dict, found: list[str]) -> None:
    if kind in ("model", "EMA"):
        found = [name.split("-", 1)[1].removesuffix(".safetensors") for name in found]
    if set(found) != set(expected):
        raise RaeditError(
            f"checkpoint {path} holds {kind}s {sorted(found)}, this run has {sorted(expected)}"
        )
