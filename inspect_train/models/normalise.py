"""The one input convention of every downstream model: images in [0, 1], standardised inside the model.

Callers (training, evaluation, predict, an exported ONNX graph) then never need to know which statistics a
network's weights expect; the statistics are buffers of the model and are stored in its checkpoint.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

PRETRAINED = "pretrained"  # --weights word for the library's own weights from its local cache
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fit_channels(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[tuple, tuple]:
    """RGB statistics for another channel count: grey (or more channels) get the channel average."""
    if len(mean) == channels:
        return tuple(mean), tuple(std)
    return (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels


class Normalised(nn.Module):
    """Wraps a network whose weights expect standardised input; forward takes [0, 1] images."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def encoder(self) -> nn.Module:
        """The smp encoder of a wrapped segmenter (loading encoder weights reaches it through here)."""
        return self.net.encoder

    def statistics(self) -> dict:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
