"""Launch a test's worker script under torchrun: 2 CPU processes (gloo), one thread each, a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_torchrun(script: str | Path, *args: str, nproc: int = 2, timeout: int = 400) -> subprocess.CompletedProcess:
    """Run `script args...` on `nproc` local processes; returns the finished process (output captured)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def run_torchrun_code(directory: Path, code: str, **options) -> subprocess.CompletedProcess:
    """Run `code` (indented source is dedented) as the worker script `directory/job.py` under `run_torchrun`; the
    workers leave with os._exit once it is done, as gloo can abort at interpreter exit after all the work."""
    script = directory / "job.py"
    script.write_text(textwrap.dedent(code) + "\nimport os\nos._exit(0)\n")
    return run_torchrun(script, **options)
