"""The public diffusion painter API other modules use: configs, training one painter, and the sampler.

Inputs are uint8 (N, C, H, W) tensors (masks bool (N, 1, H, W)) at the config's square resolution.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generators.diffusion.checkpoint import load_painter_checkpoint
from generators.diffusion.config import default_config_for, load_config
from generators.diffusion.sampler import DiffusionGenerator
from generators.diffusion.train import train_diffusion
from generators.inpaint.masks import DeformOptions, choose_mask_source
from inspect_train.errors import InputError

__all__ = ["load_config", "default_config_for", "fit_diffusion", "build_diffusion_generator", "DiffusionGenerator"]


def fit_diffusion(defect_images: torch.Tensor, defect_masks: torch.Tensor, good_images: torch.Tensor,
                  defect_type: str, out_dir: Path, *, config: dict, steps: int | None = None, seed: int = 0,
                  device: str = "cpu", resume: bool = False, progress: bool = True, extra: dict | None = None,
                  dist_ctx=None, on_step=None) -> Path:
    """Train one defect type's diffusion painter on its base images and train/good; returns the checkpoint path.
    `extra` is stored as-is in the checkpoint (the CLI and the cache record partition, base images, manifest)."""
    return train_diffusion(defect_images, defect_masks, good_images, defect_type, Path(out_dir), config=config,
                           steps=steps, seed=seed, device=device, resume=resume, progress=progress, extra=extra,
                           dist_ctx=dist_ctx, on_step=on_step)


def build_diffusion_generator(checkpoints: dict[str, Path], goods, base_sets: dict | None = None, device="cpu",
                              mask_source: str = "base", mask_checkpoints: dict[str, Path] | None = None,
                              mask_options: dict | None = None, sample_steps: int | None = None) -> DiffusionGenerator:
    """A DiffusionGenerator whose masks come from `mask_source`, as for the inpaint painter: "base" (deformed
    masks of `base_sets`, {type: ImageSet of the partition's base images}), "dfmgan" (DFMGAN stage-2 generators
    `mask_checkpoints`) or a folder of PNG masks. `mask_options` overrides the config's deformation options;
    `sample_steps` the config's sampling steps."""
    if not checkpoints:
        raise InputError("diffusion: no painter checkpoint given")
    first = load_painter_checkpoint(next(iter(checkpoints.values())))
    resolution = int(first["resolution"])
    options = DeformOptions.from_config({**(first["config"].get("masks") or {}), **(mask_options or {})})
    source, base = choose_mask_source(mask_source, base_sets, resolution, device, options, mask_checkpoints,
                                      who="diffusion")
    generator = DiffusionGenerator(checkpoints, goods, source, device, sample_steps=sample_steps)
    generator.source_names = dict(base.names) if base is not None else {}  # the base images whose masks it uses
    generator.mask_source_name = str(mask_source or "base")
    return generator
