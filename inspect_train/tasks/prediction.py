"""What `inspect-train predict` asks of a task for one run, and the stored-threshold rule the tasks share.

The command reads and resizes the images, batches them, stages the output folder and moves it into place;
the task's `Prediction` (from `task.predictor(meta, threshold)`) decides what each batch becomes: the rows
of predictions.csv and any files it writes into the staging folder (each sub-folder in `folders` is made
before the first batch and merged into --out at the end).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from inspect_train.errors import InputError

if TYPE_CHECKING:
    import torch


class Prediction(Protocol):
    header: list[str]  # the columns of predictions.csv
    folders: tuple[str, ...]  # sub-folders of --out it writes into
    written: str  # what the closing line adds after predictions.csv, e.g. " with overlays/ and masks/"

    def batch(self, model, images: torch.Tensor, x: torch.Tensor, files: list[Path], stems: list[str],
              stage: Path) -> list[list]:
        """The CSV rows of one batch: uint8 `images` (N, C, H, W), `x` the same as [0, 1] floats on the model's
        device; files are written into `stage` under each image's output stem."""
        ...

    def finish(self, stage: Path, files: list[Path]) -> None:
        """Write what sums up the whole run into `stage` (a detector's detections.json), after the last batch."""
        ...


def stored_threshold(meta: dict, override: float | None, key: str, what: str) -> float:
    """--threshold if given, else the model file's stored threshold `key` ("pixel" for a segmenter, "score" for a
    detector); either must lie in [0, 1]."""
    if override is not None:
        threshold = float(override)
    else:
        stored = meta.get("threshold") or {}
        if key not in stored:
            raise InputError(f"this model file stores no {what} threshold; pass --threshold")
        threshold = float(stored[key])
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold {threshold}: a {what} threshold lies between 0 and 1")
    return threshold
