"""Per-sample random geometry on image batches, vectorised, driven by a torch.Generator.

Only exact pixel moves (flips, quarter turns, integer shifts): a pasted mask
stays binary and a pasted defect keeps its pixels.
"""

from __future__ import annotations

import torch


def uniform(n: int, rng: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """n floats in [low, high) on the generator's device."""
    return low + (high - low) * torch.rand(n, generator=rng, device=rng.device)


def randint(n: int, high: int | torch.Tensor, rng: torch.Generator, low: int | torch.Tensor = 0) -> torch.Tensor:
    """n ints in [low, high] inclusive; low/high may be per-sample tensors."""
    u = torch.rand(n, generator=rng, device=rng.device)
    low_t = torch.as_tensor(low, device=rng.device)
    span = torch.as_tensor(high, device=rng.device) - low_t + 1
    return (low_t + (u * span).floor().long().clamp(max=span - 1)).long()


def random_flip_rot(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, vertical flip and quarter turn per sample (turns only for square images,
    otherwise a half turn, which the two flips already cover)."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    hflip = (torch.rand(n, generator=rng, device=rng.device) < 0.5).to(x.device).view(shape)
    vflip = (torch.rand(n, generator=rng, device=rng.device) < 0.5).to(x.device).view(shape)
    x = torch.where(hflip, x.flip(-1), x)
    x = torch.where(vflip, x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        turn = (torch.rand(n, generator=rng, device=rng.device) < 0.5).to(x.device).view(shape)
        x = torch.where(turn, x.transpose(-1, -2), x)  # transpose + the flips above = any of the 8 symmetries
    return x


def mask_bbox(mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(y0, y1, x0, x1) inclusive bounds of each non-empty mask (N, 1, H, W); empty masks give the full image."""
    h, w = mask.shape[-2:]
    rows = (mask[:, 0] > 0).any(-1)  # (N, H)
    cols = (mask[:, 0] > 0).any(-2)  # (N, W)
    ar_h = torch.arange(h, device=mask.device)
    ar_w = torch.arange(w, device=mask.device)
    big = max(h, w) + 1
    y0 = torch.where(rows, ar_h, big).amin(-1)
    y1 = torch.where(rows, ar_h, -1).amax(-1)
    x0 = torch.where(cols, ar_w, big).amin(-1)
    x1 = torch.where(cols, ar_w, -1).amax(-1)
    empty = y1 < 0
    y0 = torch.where(empty, 0, y0)
    y1 = torch.where(empty, h - 1, y1)
    x0 = torch.where(empty, 0, x0)
    x1 = torch.where(empty, w - 1, x1)
    return y0, y1, x0, x1


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """out[n, :, y, x] = x[n, :, (y - dy[n]) mod H, (x - dx[n]) mod W]: a per-sample wrap-around shift."""
    n, _, h, w = x.shape
    iy = (torch.arange(h, device=x.device)[None, :] - dy[:, None].to(x.device)) % h  # (N, H)
    ix = (torch.arange(w, device=x.device)[None, :] - dx[:, None].to(x.device)) % w  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x[batch, :, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)


def shift_inside(x: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Move each sample by a random integer offset that keeps its mask's bounding box inside the image,
    so the masked region never wraps around."""
    h, w = x.shape[-2:]
    y0, y1, x0, x1 = mask_bbox(mask)
    n = x.shape[0]
    dy = randint(n, (h - 1 - y1).to(rng.device), rng, low=(-y0).to(rng.device))
    dx = randint(n, (w - 1 - x1).to(rng.device), rng, low=(-x0).to(rng.device))
    return shift(x, dy, dx)
