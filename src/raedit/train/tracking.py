"""Where training metrics go: the `logging` stream (stdout) and logs/train.log, logs/metrics.jsonl (one JSON
object per logged step), TensorBoard when importable, wandb when installed and asked for; and a tqdm
progress bar with steps/s and samples/s on rank 0."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)


class MetricLogger:
    """Scalar metrics per step to every available sink (construct on every rank; only rank 0 writes)."""

    def __init__(
        self,
        log_dir: str | Path,
        is_main: bool,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "raedit",
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.is_main = is_main
        self._tensorboard = None
        self._wandb = None
        self._file_handler: logging.Handler | None = None
        self._jsonl = None
        if not is_main:
            return
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(log_dir / "metrics.jsonl", "a")
        self._file_handler = logging.FileHandler(log_dir / "train.log")
        self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("raedit").addHandler(self._file_handler)
        if tensorboard:
            if importlib.util.find_spec("tensorboard") is not None:
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(str(log_dir / "tensorboard"))
            else:
                log.info("tensorboard is not installed: metrics go to the log only")
        if wandb:
            if importlib.util.find_spec("wandb") is not None:
                import wandb as wandb_module

                self._wandb = wandb_module.init(project=wandb_project, dir=str(log_dir), config=run_config or {})
            else:
                log.warning("wandb was asked for but is not installed: metrics go to the log only")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record `metrics` at optimizer step `step`."""
        if not self.is_main:
            return
        log.info("step %d: %s", step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        if self._tensorboard is not None:
            for key, value in metrics.items():
                self._tensorboard.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._file_handler is not None:
            logging.getLogger("raedit").removeHandler(self._file_handler)
            self._file_handler.close()


class ProgressBar:
    """A tqdm bar over optimizer steps on rank 0 (nothing elsewhere), showing steps/s and samples/s."""

    def __init__(self, total_steps: int, initial_step: int, samples_per_step: int, enabled: bool) -> None:
        self.samples_per_step = samples_per_step
        self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True) if enabled else None
        self._last_time = time.perf_counter()
        self._steps_since = 0

    def advance(self, postfix: dict[str, float] | None = None) -> None:
        """One optimizer step done."""
        if self._bar is None:
            return
        self._steps_since += 1
        self._bar.update(1)
        elapsed = time.perf_counter() - self._last_time
        if elapsed >= 1.0 or postfix:
            rate = self._steps_since / max(elapsed, 1e-9)
            shown = {"steps/s": f"{rate:.2f}", "samples/s": f"{rate * self.samples_per_step:.1f}"}
            shown.update({k: f"{v:.4g}" for k, v in (postfix or {}).items()})
            self._bar.set_postfix(shown, refresh=False)
            self._last_time, self._steps_since = time.perf_counter(), 0

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
