"""Sample grids for TensorBoard and the README: defect image | mask overlay | paired good image."""

from __future__ import annotations

import torch
from torchvision.utils import make_grid


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] generator output -> [0, 1], three channels for display."""
    x = ((x.detach().float().clamp(-1, 1) + 1) / 2).cpu()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def overlay(images01: torch.Tensor, masks: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Tint mask pixels red on the (three-channel, [0, 1]) image."""
    red = torch.zeros_like(images01)
    red[:, 0] = 1.0
    m = masks.detach().float().cpu() * alpha
    return images01 * (1 - m) + red * m


def triplet_grid(defect: torch.Tensor, mask_logits: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    """One row per sample: (defect | overlay | good); returns float (3, H, W) in [0, 1]."""
    d, g = to_unit(defect), to_unit(good)
    o = overlay(d, (mask_logits >= 0))
    rows = torch.stack([d, o, g], dim=1).flatten(0, 1)
    return make_grid(rows, nrow=3, padding=1, pad_value=1.0)


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    return make_grid(to_unit(images), nrow=nrow, padding=1, pad_value=1.0)
