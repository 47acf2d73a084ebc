"""Features of (image, mask) pairs from a fixed, randomly initialised conv net: no pretrained weights.

Machines without internet have no Inception or AlexNet weights, but a random ReLU conv net already maps
images with different textures, contrasts and shapes to different statistics, which is all a two-sample
test and a diversity measure need. The net is built from a fixed seed (not the run's --seed), so its
numbers compare across runs and generators; they compare only with numbers from the same net and
resolution, never with published KID or LPIPS figures.

Input: the image in [-1, 1] plus the mask as one more channel (so where and what shape the defect is
counts as much as how it looks), shrunk by area averaging to at most 128 pixels on its long side (the net
costs about 3,500 multiply-adds per pixel: at 256x256 thousands of samples would take many CPU minutes).
Output per pair: the per-channel spatial mean and standard deviation of each ReLU layer (4 layers; 16, 32,
64, 64 channels: 352 numbers).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SEED = 20240611
WIDTHS = (16, 32, 64, 64)
MAX_SIDE = 128


class RandomConvFeatures:
    """Callable: uint8 images (N, C, H, W) and masks (N, 1, H, W) -> float64 numpy (N, 2 * sum(WIDTHS))."""

    def __init__(self, channels: int, device: str | torch.device = "cpu", batch: int = 64, seed: int = SEED,
                 max_side: int = MAX_SIDE):
        self.channels, self.device, self.batch = int(channels), torch.device(device), int(batch)
        self.max_side = int(max_side)
        layers, width_in = [], self.channels + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i, width in enumerate(WIDTHS):
                conv = nn.Conv2d(width_in, width, 3, stride=1 if i == 0 else 2, padding=1)
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # keeps activations at one scale
                nn.init.zeros_(conv.bias)
                layers.append(conv)
                width_in = width
        self.layers = nn.ModuleList(layers).to(self.device).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
        if images.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels}-channel images, got {tuple(images.shape)}")
        out = []
        for start in range(0, images.shape[0], self.batch):
            x = images[start:start + self.batch].to(self.device).float() / 127.5 - 1.0
            m = masks[start:start + self.batch].to(self.device).float() * 2.0 - 1.0
            h = torch.cat([x, m], 1)
            if max(h.shape[2:]) > self.max_side:
                scale = self.max_side / max(h.shape[2:])
                size = (max(1, round(h.shape[2] * scale)), max(1, round(h.shape[3] * scale)))
                h = F.interpolate(h, size=size, mode="area")
            parts = []
            for conv in self.layers:
                h = torch.relu(conv(h))
                parts += [h.mean((2, 3)), h.std((2, 3), unbiased=False)]
            out.append(torch.cat(parts, 1).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 2 * sum(WIDTHS)))
