"""Classic augmentation of real training images (`--aug classic`): flips, quarter turns, colour jitter.

Per-sample, vectorised on the batch's device, drawn from a torch.Generator;
masks get the same geometry so segmentation can use it too.
"""

from __future__ import annotations

import torch

from generators.classic.geometry import random_flip_rot, uniform


def classic_augment(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    rng: torch.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """images float (N, C, H, W) in [0, 1]; returns augmented copies (and masks moved the same way)."""
    n, c = images.shape[:2]
    stacked = images if masks is None else torch.cat([images, masks.float()], dim=1)
    stacked = random_flip_rot(stacked, rng)
    images, masks = (stacked, None) if masks is None else (stacked[:, :c], stacked[:, c:])
    b = uniform(n, rng, 1 - brightness, 1 + brightness).view(-1, 1, 1, 1).to(images.device)
    k = uniform(n, rng, 1 - contrast, 1 + contrast).view(-1, 1, 1, 1).to(images.device)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * k + mean) * b
    return images.clamp(0, 1), masks
