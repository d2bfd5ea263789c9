"""A run's logs: ``metrics.jsonl`` and TensorBoard (rank 0 only), and the loss-curve plot."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any


class RunLog:
    """The metric logs of one process of a run, opened at the step it starts from.

    A run stopped between checkpoints logged steps it will now train again: they are dropped
    from both logs on opening, so a resumed run's curves hold each step once. Disabled (every
    rank but 0), it writes nothing and creates nothing.
    """

    def __init__(self, out: Path, step: int, enabled: bool = True) -> None:
        """Logs under ``out`` continuing after ``step``."""
        self.out, self.step, self.enabled = out, step, enabled
        self._file: Any = None
        self._writer: Any = None

    def __enter__(self) -> RunLog:
        """Open both logs (nothing when disabled)."""
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            drop_logged_after(self.out / "metrics.jsonl", self.step)
            self._writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1)
            self._file = (self.out / "metrics.jsonl").open("a")
        return self

    def write(self, rows: list[dict[str, float]]) -> None:
        """Append metric rows (each with its ``step``) to both logs."""
        if not self.enabled:
            return
        for row in rows:
            self._file.write(json.dumps(row) + "\n")
            for key, value in row.items():
                self._writer.add_scalar(f"train/{key}", value, int(row["step"]))
        self._file.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close both logs."""
        if self._file is not None:
            self._file.close()
            self._writer.close()


def drop_logged_after(log_path: Path, step: int) -> None:
    """Keep only the JSONL metric rows up to ``step`` (the checkpoint a run resumes from)."""
    if not log_path.exists():
        return
    lines = log_path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):  # atomically, like the checkpoint: a crash keeps the old log
        tmp = log_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(log_path)


def plot_run(run_dir: str | Path, out: str | Path) -> Path:
    """Loss curves of a run (from its metrics.jsonl) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wallwm.pipeline.inspect import save_figure

    rows = [
        json.loads(line)
        for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
        if line
    ]
    if not rows:
        raise ValueError(f"{run_dir}: metrics.jsonl is empty")
    keys = [k for k in rows[0] if k not in ("step", "seconds", "lr", "grad_norm")]
    fig, ax = plt.subplots(figsize=(8, 4))
    steps = [r["step"] for r in rows]
    for key in keys:
        ax.plot(steps, [r[key] for r in rows], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(str(run_dir))
    return save_figure(fig, out, dpi=100, bbox_inches="tight")
