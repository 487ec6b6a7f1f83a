"""A run directory: the resolved config, checkpoints/, logs/ and images/ of one training run, and the run's export.

A run directory belongs to one run. A new run starts only in a missing or empty directory; one that holds anything
(checkpoints, an export, logs) is continued with `--resume` or moved aside with `--fresh`, never written over. While a
run writes it, `.lock` names the process (host and pid); a second process is refused. A lock left by a killed run
on this host (its process gone) is reported and taken over; one from another host, which can't be checked, is
refused with what to do.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raedit.core.distributed import DistContext, barrier
from raedit.core.errors import RaeditError
from raedit.core.files import write_text

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"


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

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    @contextmanager
    def opened(self, ctx: DistContext, config_yaml: str, resume: bool = False, fresh: bool = False) -> Iterator[None]:
        """The run directory, checked (`check_start`, every process), set aside with `fresh`, locked and created
        (rank 0) for the body of the `with`; the lock is released after it, whatever happens."""
        self.check_start(resume, fresh)
        barrier()
        if ctx.is_main:
            if fresh and (moved := self.set_aside()) is not None:
                logger.info("the earlier run in %s moved to %s", self.root, moved)
            self.lock()
        try:
            if ctx.is_main:
                self.create(config_yaml)
            barrier()
            yield
        finally:
            if ctx.is_main:
                self.unlock()

    def check_start(self, resume: bool, fresh: bool) -> None:
        """Before anything is written (on every process): a new run needs a missing or empty directory."""
        if resume and fresh:
            raise RaeditError("--resume continues the run in the run directory, --fresh moves it aside: give one")
        held = sorted(path.name for path in self.root.iterdir() if path.name != LOCK_FILE) if self.root.is_dir() \
            else []
        if held and not resume and not fresh:
            raise RaeditError(f"{self.root} holds another run ({', '.join(held[:4])}"
                              f"{', ...' if len(held) > 4 else ''}): continue it with --resume, or start anew "
                              f"with --fresh (moves it to {self.root}.replaced-<time>), or choose another run_dir")

    def set_aside(self) -> Path | None:
        """Move a run directory that holds anything to `<root>.replaced-<UTC time>` (call on rank 0, after
        `check_start`); returns where it went."""
        if not self.root.is_dir() or not any(self.root.iterdir()):
            return None
        self._check_lock()
        target = self.root.with_name(f"{self.root.name}.replaced-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
        self.root.rename(target)
        return target

    def lock(self) -> None:
        """Take the run directory for this process (rank 0): create `.lock` holding host and pid, atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_lock()
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        try:
            descriptor = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another process took it between the check and here
            raise RaeditError(f"{self.root} was just taken by another process ({self.lock_path})") from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(owner)

    def unlock(self) -> None:
        """Release the lock this process holds."""
        self.lock_path.unlink(missing_ok=True)

    def _check_lock(self) -> None:
        """Refuse a directory another live process (or another host) holds; take over a dead process's lock."""
        if not self.lock_path.exists():
            return
        try:
            owner = json.loads(self.lock_path.read_text())
            host, pid = str(owner["host"]), int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            raise RaeditError(f"{self.lock_path} is unreadable: if no job writes {self.root}, delete it") from None
        if host == socket.gethostname() and (pid == os.getpid() or not _process_alive(pid)):
            logger.warning("%s was locked by process %d, which no longer runs (killed?): taking it over", self.root,
                           pid)
            self.lock_path.unlink(missing_ok=True)
            return
        raise RaeditError(f"{self.root} is being written by process {pid} on {host} ({self.lock_path}); wait for "
                          f"it, or, if no process writes it (a run killed on another machine), delete the lock")

    def create(self, config_yaml: str) -> None:
        """Make the folders and write the resolved config (call on rank 0)."""
        for folder in (self.checkpoints, self.logs, self.images):
            folder.mkdir(parents=True, exist_ok=True)
        write_text(self.config_path, config_yaml)

    def image_path(self, tag: str, step: int) -> Path:
        return self.images / f"{tag}-step{step:08d}.png"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
