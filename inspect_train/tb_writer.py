"""The one place a TensorBoard writer is opened (training runs, generator trainings, evaluate-gen)."""

from __future__ import annotations

from pathlib import Path


def open_writer(log_dir: str | Path):
    """A SummaryWriter logging under `log_dir`. TensorBoard is imported here, on first use, because importing it
    costs about a second and most commands (help, data, predict, export) never log."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))
