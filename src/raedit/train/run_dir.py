"""A run directory: the resolved config, checkpoints/, logs/ and images/ of one training run."""

from __future__ import annotations

from pathlib import Path

from raedit.core.files import write_text


class RunDir:
    """Paths of one run: `root/config.yaml`, `root/checkpoints/`, `root/logs/`, `root/images/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def images(self) -> Path:
        return self.root / "images"

    def create(self, config_yaml: str) -> None:
        """Make the folders and write the resolved config (call on rank 0)."""
        for folder in (self.checkpoints, self.logs, self.images):
            folder.mkdir(parents=True, exist_ok=True)
        write_text(self.config_path, config_yaml)

    def image_path(self, tag: str, step: int) -> Path:
        return self.images / f"{tag}-step{step:08d}.png"

