"""The public DFMGAN API other modules use: configs, the two training stages, and the sampler.

Inputs are uint8 (N, C, H, W) tensors (masks bool (N, 1, H, W)) already resized to the
config's `resolution` (N for a square, or HxW; see generators.dfmgan.config.resolution_hw);
the channel count comes from the data and is kept in the checkpoint, so a grey dataset
gives a grey generator.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generators.dfmgan.config import load_config
from generators.dfmgan.sampler import DFMGANGenerator
from generators.dfmgan.train_backbone import train_backbone
from generators.dfmgan.train_defect import train_defect

__all__ = ["load_config", "fit_backbone", "fit_defect", "DFMGANGenerator"]


def fit_backbone(
    train_good: torch.Tensor,
    config: dict,
    out_dir: Path,
    *,
    steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    dist_ctx=None,
) -> Path:
    """Stage 1: train the defect-free StyleGAN2 backbone; returns the checkpoint path."""
    return train_backbone(train_good, config, Path(out_dir), steps=steps, seed=seed, device=device,
                          resume=resume, progress=progress, dist_ctx=dist_ctx)


def fit_defect(
    backbone_ckpt: Path,
    defect_images: torch.Tensor,
    defect_masks: torch.Tensor,
    defect_type: str,
    out_dir: Path,
    *,
    config: dict | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    extra: dict | None = None,
    dist_ctx=None,
) -> Path:
    """Stage 2: freeze the backbone, train the defect modules on one defect type's base set.

    `extra` is stored as-is in the checkpoint (the CLI records the manifest and partition there).
    `dist_ctx` (inspect_train.distributed.init_distributed()) spreads the global batch over torchrun ranks.
    """
    return train_defect(Path(backbone_ckpt), defect_images, defect_masks, defect_type, Path(out_dir),
                        config=config, steps=steps, seed=seed, device=device, resume=resume,
                        progress=progress, extra=extra, dist_ctx=dist_ctx)
