"""The public inpaint API other modules use: configs, training one painter, mask sources and the sampler.

Inputs are uint8 (N, C, H, W) tensors (masks bool (N, 1, H, W)) at the config's square resolution.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generators.inpaint.checkpoint import load_painter_checkpoint
from generators.inpaint.config import LOSSES, default_config_for, load_config
from generators.inpaint.masks import (MASK_SOURCES, BaseMasks, DeformOptions, DFMGANMasks, FolderMasks, MaskSource,
                                     choose_mask_source)
from generators.inpaint.sampler import InpaintGenerator
from generators.inpaint.train import train_inpaint
from inspect_train.errors import InputError

__all__ = ["LOSSES", "MASK_SOURCES", "load_config", "default_config_for", "fit_inpaint", "build_inpaint_generator",
           "InpaintGenerator", "MaskSource", "BaseMasks", "DFMGANMasks", "FolderMasks", "DeformOptions"]


def fit_inpaint(defect_images: torch.Tensor, defect_masks: torch.Tensor, good_images: torch.Tensor,
                defect_type: str, out_dir: Path, *, config: dict, steps: int | None = None, loss: str | None = None,
                seed: int = 0, device: str = "cpu", resume: bool = False, progress: bool = True,
                extra: dict | None = None, dist_ctx=None, on_step=None) -> Path:
    """Train one defect type's painter on its base images and train/good; returns the checkpoint path.
    `extra` is stored as-is in the checkpoint (the CLI and the cache record partition, base images, manifest)."""
    return train_inpaint(defect_images, defect_masks, good_images, defect_type, Path(out_dir), config=config,
                         steps=steps, loss=loss, seed=seed, device=device, resume=resume, progress=progress,
                         extra=extra, dist_ctx=dist_ctx, on_step=on_step)


def build_inpaint_generator(checkpoints: dict[str, Path], goods, base_sets: dict | None = None, device="cpu",
                            mask_source: str = "base", mask_checkpoints: dict[str, Path] | None = None,
                            mask_options: dict | None = None) -> InpaintGenerator:
    """An InpaintGenerator whose masks come from `mask_source`:

    - "base": deformed masks of `base_sets` ({type: ImageSet of the partition's base images}), the default;
    - "dfmgan": DFMGAN stage-2 generators `mask_checkpoints` ({type: checkpoint}); empty DFMGAN masks are
      replaced by deformed base masks when `base_sets` is given;
    - a folder of PNG masks drawn by the user (the same for every type; deformed like base masks).

    `mask_options` overrides the deformation options of the painters' config (e.g. {"turns": False})."""
    if not checkpoints:
        raise InputError("inpaint: no painter checkpoint given")
    first = load_painter_checkpoint(next(iter(checkpoints.values())))
    resolution = int(first["resolution"])
    options = DeformOptions.from_config({**(first["config"].get("masks") or {}), **(mask_options or {})})
    source, base = choose_mask_source(mask_source, base_sets, resolution, device, options, mask_checkpoints)
    generator = InpaintGenerator(checkpoints, goods, source, device)
    generator.source_names = dict(base.names) if base is not None else {}  # the base images whose masks it uses
    generator.mask_source_name = str(mask_source or "base")
    return generator
