"""Loading a frozen encoder's transformers model from a hub id or a local directory, failing fast and clearly.

`from_pretrained` retries an unreachable hub for about 25 s before it gives up, and its errors are several lines
of advice about transformers rather than raedit. `load_pretrained` tries the local cache first, asks the hub once
(one request, short timeout) whether it can be reached, downloads only then, and turns every way of not getting
the weights into one `RaeditError` line that says what was tried and how to provide the weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import PreTrainedModel

from raedit.core.errors import RaeditError, first_line
from raedit.encoders.spec import EncoderSpec

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=PreTrainedModel)

HUB_PROBE_TIMEOUT_S = 10.0  # one request to the hub before a download; the hub's own default timeout is 10 s
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
_LOAD_REPORT_LOGGERS = (  # what these say, `_from_pretrained` checks itself (missing tensors, patch size)
    "transformers.modeling_utils", "transformers.distributed.tensor_parallel", "transformers.configuration_utils",
)


def reject_options(spec: EncoderSpec, options: Mapping[str, Any]) -> None:
    """The transformers encoders take no build options besides their named ones: name any others given."""
    if options:
        raise RaeditError(f"unknown options for encoder '{spec.name}': {', '.join(sorted(options))}")


def load_pretrained(model_class: type[ModelT], spec: EncoderSpec, source: str, **config_overrides: Any) -> ModelT:
    """`model_class.from_pretrained(source)` in float32, from a local directory, the HF cache or the hub.

    `source` is a directory (from `save_pretrained` or `hf download --local-dir`) or a hub id. A hub id is looked
    up in the local cache first; the network is used only when the cache lacks it, HF_HUB_OFFLINE is not set and
    the hub answers one short request. Weights for other parts of the checkpoint (a text tower, an MAE decoder)
    are skipped; weights the model needs but the checkpoint lacks are an error, not a random initialization.
    `config_overrides` set config attributes (e.g. `mask_ratio=0.0`). The model's patch size must be the spec's.
    """
    directory = Path(source).expanduser()
    if directory.is_dir():
        model = _from_pretrained(model_class, spec, str(directory), config_overrides, local_files_only=True)
    else:
        _require_hub_id(spec, source)
        try:
            model = _from_pretrained(model_class, spec, source, config_overrides, local_files_only=True)
        except OSError:  # not (completely) in the cache
            if _offline_mode():
                raise _missing_weights(spec, source, "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
            _require_reachable_hub(spec, source)
            logger.info("downloading %s weights from the hub: %s", spec.name, source)
            model = _from_pretrained(model_class, spec, source, config_overrides, local_files_only=False)
    if model.config.patch_size != spec.patch_size:
        raise RaeditError(
            f"encoder '{spec.name}' needs patch size {spec.patch_size}, but the weights from '{source}' have "
            f"patch size {model.config.patch_size}"
        )
    return model


def _from_pretrained(
    model_class: type[ModelT], spec: EncoderSpec, source: str, config_overrides: Mapping[str, Any],
    *, local_files_only: bool,
) -> ModelT:
    """One `from_pretrained` call; raises OSError for files it cannot find in the cache, RaeditError otherwise."""
    try:
        with _quiet_load_report():
            model, loading_info = model_class.from_pretrained(
                source, local_files_only=local_files_only, output_loading_info=True, dtype=torch.float32,
                **config_overrides,
            )
    except OSError as error:
        if local_files_only and not Path(source).expanduser().is_dir():
            raise  # a cache miss: the caller decides whether to download
        raise _missing_weights(spec, source, first_line(error)) from error
    except (ValueError, RuntimeError) as error:  # wrong config type, tensor shapes that don't fit the model
        raise RaeditError(
            f"weights '{source}' do not fit encoder '{spec.name}' ({model_class.__name__}): {first_line(error)}"
        ) from error
    missing = sorted(loading_info["missing_keys"])
    if missing:
        raise RaeditError(
            f"weights '{source}' do not fit encoder '{spec.name}' ({model_class.__name__}): {len(missing)} "
            f"missing tensors, e.g. {', '.join(missing[:3])}"
        )
    if loading_info["unexpected_keys"]:
        logger.debug("%s: skipped %d checkpoint tensors the encoder does not use (other towers/heads)",
                     spec.name, len(loading_info["unexpected_keys"]))
    return model


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """Silence transformers' loading chatter: the table of skipped tensors (the unused towers), config checks of
    those towers, and a tensor-parallel plan check that warns about every layer once the report logger is quiet."""
    quiet_loggers = [logging.getLogger(name) for name in _LOAD_REPORT_LOGGERS]
    levels = [quiet_logger.level for quiet_logger in quiet_loggers]
    for quiet_logger in quiet_loggers:
        quiet_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for quiet_logger, level in zip(quiet_loggers, levels):
            quiet_logger.setLevel(level)


def _require_hub_id(spec: EncoderSpec, source: str) -> None:
    """A source that is no directory must at least be a well-formed hub id ('name' or 'owner/name')."""
    if not _is_hub_id(source):
        raise _missing_weights(spec, source, "no such directory, and not a Hugging Face hub id")


def _require_reachable_hub(spec: EncoderSpec, repo_id: str) -> None:
    """One request to the hub (no retries): raise at once when it is unreachable or has no such model."""
    try:
        HfApi().model_info(repo_id, timeout=HUB_PROBE_TIMEOUT_S)
    except HfHubHTTPError as error:  # the hub answered: no such repository, gated, ...
        raise _missing_weights(spec, repo_id, f"the hub refused it ({first_line(error)})") from error
    except Exception as error:  # noqa: BLE001 - any transport failure (DNS, refused, timeout) means "no network"
        raise _missing_weights(
            spec, repo_id, f"it is not in the Hugging Face cache and the hub is unreachable ({first_line(error)})"
        ) from error


def _is_hub_id(source: str) -> bool:
    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return not Path(source).expanduser().exists()


def _offline_mode() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE_VALUES


def _missing_weights(spec: EncoderSpec, source: str, reason: str) -> RaeditError:
    """The one-line error for weights that cannot be had, with the ways to provide them."""
    hub_id = source if _is_hub_id(source) else spec.source
    return RaeditError(
        f"cannot load weights for encoder '{spec.name}' from '{source}': {reason.rstrip('.')}. To provide them, "
        f"download them on a machine with network (`hf download {hub_id}` fills the Hugging Face cache; copy "
        f"HF_HOME over, and HF_HUB_OFFLINE=1 then uses the cache only), or pass a local directory "
        f"(`hf download {hub_id} --local-dir DIR`, or save_pretrained) as the encoder weights"
    )
