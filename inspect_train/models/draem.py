"""A DRAEM-style anomaly segmenter: a reconstructive sub-network that learns to
paint a defect-free version of its input, and a discriminative U-Net that
compares input and reconstruction to find where they differ.

The anomaly source during training (perlin noise, crop-paste, DFMGAN...) is
not part of the model: the training loop gives it (defect image, mask, good
target). Widths and depths are configurable so the tests run a tiny model
with the same code; the defaults are the paper's scale (reconstructive base
width 128 with 4 poolings, discriminative base width 64 with 5 poolings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.losses import FocalLoss
from torchmetrics.functional.image import structural_similarity_index_measure


@dataclass
class DraemConfig:
    recon_width: int = 128
    recon_levels: int = 5  # resolution levels; poolings = levels - 1
    disc_width: int = 64
    disc_levels: int = 6
    max_width_factor: int = 8  # widths double per level up to this multiple of the base width
    ssim_window: int = 11
    focal_gamma: float = 2.0

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (max(self.recon_levels, self.disc_levels) - 1)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _widths(base: int, levels: int, max_factor: int) -> list[int]:
    return [base * min(2**i, max_factor) for i in range(levels)]


class _Encoder(nn.Module):
    def __init__(self, cin: int, widths: list[int]):
        super().__init__()
        self.blocks = nn.ModuleList(_double_conv(a, b) for a, b in zip([cin, *widths[:-1]], widths))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features


class _Decoder(nn.Module):
    """Upsample level by level; with skips it is a U-Net decoder, without it a plain autoencoder decoder."""

    def __init__(self, widths: list[int], cout: int, skips: bool):
        super().__init__()
        self.skips = skips
        rev = widths[::-1]
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True))
            for a, b in zip(rev[:-1], rev[1:])
        )
        self.blocks = nn.ModuleList(_double_conv(b * (2 if skips else 1), b) for b in rev[1:])
        self.head = nn.Conv2d(widths[0], cout, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, block, skip in zip(self.up, self.blocks, features[-2::-1]):
            x = up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
            x = block(torch.cat([x, skip], dim=1) if self.skips else x)
        return self.head(x)


class ReconstructiveNet(nn.Module):
    """Encoder-decoder without skip connections, so it cannot copy a defect through to its output."""

    def __init__(self, channels: int, width: int, levels: int, max_factor: int):
        super().__init__()
        widths = _widths(width, levels, max_factor)
        self.encoder = _Encoder(channels, widths)
        self.decoder = _Decoder(widths, channels, skips=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class DiscriminativeNet(nn.Module):
    """U-Net over (input, reconstruction) stacked on channels; one logit per pixel."""

    def __init__(self, channels: int, width: int, levels: int, max_factor: int):
        super().__init__()
        widths = _widths(width, levels, max_factor)
        self.encoder = _Encoder(2 * channels, widths)
        self.decoder = _Decoder(widths, 1, skips=True)

    def forward(self, image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(torch.cat([image, reconstruction], dim=1)))


class Draem(nn.Module):
    """forward(x in [0, 1]) -> (reconstruction, defect logits (N, 1, H, W))."""

    def __init__(self, channels: int, config: DraemConfig | None = None):
        super().__init__()
        self.config = config or DraemConfig()
        c = self.config
        self.reconstructive = ReconstructiveNet(channels, c.recon_width, c.recon_levels, c.max_width_factor)
        self.discriminative = DiscriminativeNet(channels, c.disc_width, c.disc_levels, c.max_width_factor)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = self.reconstructive(x)
        return reconstruction, self.discriminative(x, reconstruction)


class DraemLoss(nn.Module):
    """L2 + (1 - SSIM) between reconstruction and the defect-free target, plus focal loss on the mask.

    `weight` (N, 1, H, W), optional, limits the reconstruction terms to some
    pixels: a real defect image has no defect-free twin, so it is used as its
    own target only outside its mask (weight 1 - mask) and the network is never
    taught to reproduce a defect.
    """

    def __init__(self, config: DraemConfig | None = None):
        super().__init__()
        self.config = config or DraemConfig()
        self.focal = FocalLoss(mode="binary", gamma=self.config.focal_gamma)

    def forward(
        self,
        reconstruction: torch.Tensor,
        target: torch.Tensor,
        logits: torch.Tensor,
        mask: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if weight is None:
            weight = torch.ones_like(mask)
        total = weight.sum().clamp_min(1.0)
        l2 = (((reconstruction - target) ** 2).mean(dim=1, keepdim=True) * weight).sum() / total
        window = min(self.config.ssim_window, *target.shape[-2:])
        window -= 1 - window % 2  # SSIM needs an odd window
        _, ssim_map = structural_similarity_index_measure(
            reconstruction, target, data_range=1.0, kernel_size=window, return_full_image=True, reduction="none"
        )
        ssim = (ssim_map.mean(dim=1, keepdim=True) * weight).sum() / total
        focal = self.focal(logits, mask)
        return {"loss": l2 + (1 - ssim) + focal, "l2": l2, "ssim": 1 - ssim, "focal": focal}
