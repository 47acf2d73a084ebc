"""Differentiable augmentation (DiffAugment-style) so the discriminators do not memorise a few images.

The same random ops are applied to real and fake batches; gradients flow through
them to G. Geometric ops move every channel together (image and mask stay
aligned for D_match); colour ops touch only the first `color_channels`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str | None) -> list[str]:
    ops = [p.strip() for p in (policy or "").split(",") if p.strip()]
    unknown = [p for p in ops if p not in POLICIES]
    if unknown:
        from inspect_train.errors import InputError

        raise InputError(f"augment policy: unknown op(s) {unknown} (known: {', '.join(POLICIES)})")
    return ops


def augment(x: torch.Tensor, policy: str | None, color_channels: int | None = None) -> torch.Tensor:
    for op in parse_policy(policy):
        if op == "color":
            x = _color(x, color_channels or x.shape[1])
        elif op == "translation":
            x = _translation(x)
        elif op == "cutout":
            x = _cutout(x)
    return x


def _rand(n: int, x: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype)


def _color(x: torch.Tensor, cc: int) -> torch.Tensor:
    """Random brightness, saturation (RGB only) and contrast on the image channels."""
    img, rest = x[:, :cc], x[:, cc:]
    n = x.shape[0]
    img = img + (_rand(n, x) - 0.5)
    if cc > 1:
        mean = img.mean(dim=1, keepdim=True)
        img = (img - mean) * (_rand(n, x) * 2) + mean
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    img = (img - mean) * (_rand(n, x) + 0.5) + mean
    return torch.cat([img, rest], dim=1) if rest.shape[1] else img


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by up to ratio*size whole pixels, padding with zeros."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (n,), device=x.device).to(x.dtype)
    tx = torch.randint(-sx, sx + 1, (n,), device=x.device).to(x.dtype)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * tx / w
    theta[:, 1, 2] = -2 * ty / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random rectangle of half the size per sample."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).to(x.dtype)[:, None]
