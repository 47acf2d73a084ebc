"""The painter and its two critics.

The painter is a small U-Net. It sees the good image with the region to paint blanked, the defect mask, the
blanked region (mask + feather band) and spatial noise; a latent code modulates every decoder level (a learned
per-channel scale and shift), so two codes give two different defects in the same mask. Its output is
composited: painted pixels inside the mask, the untouched good image outside, and a blend over a thin band
(`feather`), so nothing outside mask + band can change. One painter per defect type: each learns from its own
few base images, and a partition's painters train independently (and in parallel, if wanted).

The critics are plain strided conv nets: a local one that judges crops around defects, and a match one that
judges (image, mask) pairs, so a painted defect must sit where its mask is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def feather(mask: torch.Tensor, band: int) -> torch.Tensor:
    """Blend weights: exactly 1 on the mask, falling to exactly 0 within 2 * band pixels of it (a dilation,
    then a box blur of the same radius). band 0: the mask itself."""
    mask = mask.float()
    if band <= 0:
        return mask
    k = 2 * band + 1
    grown = F.max_pool2d(mask, k, stride=1, padding=band)
    return F.avg_pool2d(grown, k, stride=1, padding=band, count_include_pad=False)


def composite(good: torch.Tensor, painted: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """good where alpha is 0 (bit for bit), painted where it is 1, linear in between."""
    return good + alpha * (painted - good)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class _Down(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), _act(),
                                  nn.Conv2d(c_out, c_out, 3, padding=1), _act())

    def forward(self, x):
        return self.body(x)


class _Up(nn.Module):
    """Upsample, join the skip, one conv, then the latent's per-channel scale and shift (starting at identity)."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, z_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in + c_skip, c_out, 3, padding=1)
        self.style = nn.Linear(z_dim, 2 * c_out) if z_dim else None
        if self.style is not None:
            nn.init.zeros_(self.style.weight)
            nn.init.zeros_(self.style.bias)
        self.act = _act()

    def forward(self, x, skip, z):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv(torch.cat([x, skip], 1))
        if self.style is not None:
            gain, bias = self.style(z)[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + gain) + bias
        return self.act(x)


class Painter(nn.Module):
    """good (N, C, H, W) in [-1, 1], mask (N, 1, H, W) in {0, 1}, z (N, z_dim), noise (N, noise_channels, H, W)
    -> (composited image in [-1, 1], blend weights alpha)."""

    def __init__(self, channels: int, width: int = 16, depth: int = 4, max_width: int = 128,
                 noise_channels: int = 1, z_dim: int = 32, band: int = 1):
        super().__init__()
        self.channels, self.depth, self.band = int(channels), int(depth), int(band)
        self.noise_channels, self.z_dim = int(noise_channels), int(z_dim)
        widths = [min(int(width) * 2 ** i, int(max_width)) for i in range(self.depth + 1)]
        self.stem = nn.Sequential(nn.Conv2d(self.channels + 2 + self.noise_channels, widths[0], 3, padding=1), _act())
        self.down = nn.ModuleList(_Down(widths[i], widths[i + 1]) for i in range(self.depth))
        self.mid = nn.Sequential(nn.Conv2d(widths[-1], widths[-1], 3, padding=1), _act())
        self.up = nn.ModuleList(_Up(widths[i + 1], widths[i], widths[i], self.z_dim)
                                for i in reversed(range(self.depth)))
        self.out = nn.Conv2d(widths[0], self.channels, 3, padding=1)

    def paint(self, good: torch.Tensor, mask: torch.Tensor, z: torch.Tensor, noise: torch.Tensor):
        """The raw painted image (before compositing) and alpha."""
        alpha = feather(mask, self.band)
        hole = (alpha > 0).to(good.dtype)
        x = self.stem(torch.cat([good * (1 - hole), mask.to(good.dtype), hole, noise], 1))
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(x)
        x = self.mid(x)
        for up in self.up:
            x = up(x, skips.pop(), z)
        return torch.tanh(self.out(x)), alpha

    def forward(self, good: torch.Tensor, mask: torch.Tensor, z: torch.Tensor, noise: torch.Tensor):
        painted, alpha = self.paint(good, mask, z, noise)
        return composite(good, painted, alpha), alpha


class Critic(nn.Module):
    """Strided convs down to 4x4, then one linear logit. `in_channels` = image channels (+1 for a mask)."""

    def __init__(self, in_channels: int, size: int, width: int = 16, max_width: int = 128):
        super().__init__()
        layers, c, s = [nn.Conv2d(in_channels, int(width), 3, padding=1), _act()], int(width), int(size)
        while s > 4:
            c_next = min(c * 2, int(max_width))
            layers += [nn.Conv2d(c, c_next, 3, stride=2, padding=1), _act()]
            c, s = c_next, (s + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * s * s, 1)

    def forward(self, x):
        return self.head(self.features(x).flatten(1)).squeeze(1)


def build_networks(config: dict, channels: int) -> tuple[Painter, Critic, Critic]:
    """The painter, the local critic (crops of `local_d.crop` pixels) and the match critic (image + mask, at the
    training window: `train.crop`, or the whole image)."""
    p, local, match = config["painter"], config["local_d"], config["match_d"]
    painter = Painter(channels, width=p["width"], depth=p["depth"], max_width=p.get("max_width", 128),
                      noise_channels=p.get("noise_channels", 1), z_dim=p.get("z_dim", 32), band=config["band"])
    d_local = Critic(channels, int(local["crop"]), local["width"], local.get("max_width", 128))
    window = int(config["train"].get("crop") or config["resolution"])
    d_match = Critic(channels + 1, window, match["width"], match.get("max_width", 128))
    return painter, d_local, d_match


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
