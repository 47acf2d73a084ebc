"""The one interface every defect source implements, learned or not.

A generator is built for one category and knows its defect types. `sample`
returns a fresh batch for one defect type on the generator's device, drawn
from the torch.Generator it is given, so runs are reproducible from a seed and
GPU generators never round-trip through the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class SyntheticBatch:
    """images: float (N, C, H, W) in [0, 1]; masks: float (N, 1, H, W) in {0, 1};
    labels: long (N,), index of the defect type in the generator's `defect_types`;
    goods: the paired defect-free images (same shape as images) when the source has them;
    sources: the generator that drew each row, when several share the batch (a mixture)."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    goods: torch.Tensor | None = None
    sources: list[str] | None = None

    def to(self, device: torch.device | str) -> "SyntheticBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return SyntheticBatch(move(self.images), move(self.masks), move(self.labels), move(self.goods),
                              self.sources)

    def __len__(self) -> int:
        return int(self.images.shape[0])


class TrainingDiverged(RuntimeError):
    """A learned generator's loss became NaN/inf; the last good checkpoint on disk is left untouched."""


class DefectGenerator(Protocol):
    defect_types: list[str]
    device: torch.device

    def sample(self, n: int, defect_type: str, rng: torch.Generator) -> SyntheticBatch:
        """n fresh samples of one defect type, on `self.device`."""
        ...
