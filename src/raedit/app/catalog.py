"""The models and RAEs the app offers: the directories given on the command line, then every stage-2 run,
saved denoiser and saved RAE found under the search folders (`runs/`, and `models/` where `raedit pull` imports
the released ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from raedit.autoencoder import CONFIG_FILE as RAE_CONFIG_FILE
from raedit.diffusion.denoiser_io import CONFIG_FILE as DENOISER_CONFIG_FILE
from raedit.diffusion.denoiser_io import EXPORT_DIR

SEARCH_FOLDERS = ("runs", "models")
SKIPPED_FOLDERS = {"checkpoints", "images", "logs", "eval-cache", "latents"}  # inside runs: nothing to offer
MAX_DEPTH = 4


@dataclass
class Catalog:
    """Paths (as given or relative to the working directory) of the denoisers and RAEs on offer, in order."""

    denoisers: list[str] = field(default_factory=list)
    autoencoders: list[str] = field(default_factory=list)


def _walk(folder: Path, depth: int = 0):
    yield folder
    if depth == MAX_DEPTH:
        return
    try:
        children = sorted(entry for entry in folder.iterdir() if entry.is_dir())
    except OSError:
        return
    for child in children:
        if child.name not in SKIPPED_FOLDERS and not child.name.startswith("."):
            yield from _walk(child, depth + 1)


def is_denoiser(path: Path) -> bool:
    """A stage-2 run directory (with its `model/` export) or a saved denoiser that is not a run's export."""
    if (path / EXPORT_DIR / DENOISER_CONFIG_FILE).is_file():
        return True
    exported_by_run = path.name == EXPORT_DIR and (path.parent / "config.yaml").is_file()
    return (path / DENOISER_CONFIG_FILE).is_file() and not exported_by_run


def find_models(given_models: list[str] = (), given_autoencoders: list[str] = (),
                search_folders: list[str | Path] | None = None) -> Catalog:
    """The given paths first (as given, even when they do not load: the page says why when they are chosen),
    then what the search folders (default SEARCH_FOLDERS) hold."""
    catalog = Catalog(list(dict.fromkeys(given_models)), list(dict.fromkeys(given_autoencoders)))
    for root in map(Path, SEARCH_FOLDERS if search_folders is None else search_folders):
        if not root.is_dir():
            continue
        for folder in _walk(root):
            if is_denoiser(folder) and str(folder) not in catalog.denoisers:
                catalog.denoisers.append(str(folder))
            if (folder / RAE_CONFIG_FILE).is_file() and str(folder) not in catalog.autoencoders:
                catalog.autoencoders.append(str(folder))
    return catalog
