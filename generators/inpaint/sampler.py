"""InpaintGenerator: the in-loop sampler (implements generators.base.DefectGenerator).

A draw is: n real train/good images, n fresh masks from the mask source, a latent and a noise map per sample,
and one forward pass of that defect type's painter. Everything stays on the generator's device and every random
number comes from the torch.Generator given, so a seed repeats a run. The paired good image returned is the
real good image the defect was painted on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generators.base import SyntheticBatch
from generators.inpaint.checkpoint import load_painter_checkpoint, painter_from_state
from generators.inpaint.masks import BaseMasks, DeformOptions, MaskSource, fit_masks, painting_surfaces
from generators.inpaint.networks import composite
from inspect_train.errors import InputError


class InpaintGenerator:
    """`checkpoints`: {defect type: painter checkpoint}; `good_images`: train/good as an ImageSet or a uint8
    (N, C, H, W) tensor (resized to the painters' resolution when it differs); `mask_source`: where to paint
    (see generators/inpaint/masks.py), or None for the painters' own base masks (stored in each checkpoint)."""

    def __init__(self, checkpoints: dict[str, Path], good_images, mask_source: MaskSource | None = None,
                 device="cpu", good_names: list[str] | None = None):
        if not checkpoints:
            raise InputError("inpaint: no painter checkpoint given")
        self.device = torch.device(device)
        self.defect_types = sorted(checkpoints)
        self._painters, self.info, shapes, base = {}, {}, set(), {}
        for defect_type in self.defect_types:
            state = load_painter_checkpoint(checkpoints[defect_type])
            self._painters[defect_type] = painter_from_state(state, self.device)
            self.info[defect_type] = {k: state.get(k) for k in ("defect_type", "step", "loss", "partition",
                                                                 "manifest", "category", "base")}
            self.info[defect_type]["config"] = state["config"].get("name")
            shapes.add((int(state["resolution"]), int(state["channels"])))
            base[defect_type] = state["base_masks"]
            self.config = state["config"]
        if len(shapes) > 1:
            raise InputError(f"inpaint: painters disagree on resolution/channels {sorted(shapes)}")
        self.resolution, self.channels = shapes.pop()
        self.goods, self.good_names = painting_surfaces(good_images, good_names, self.channels, self.resolution,
                                                        self.device, "inpaint")
        if mask_source is None:
            mask_source = BaseMasks(base, self.resolution, self.device,
                                    DeformOptions.from_config(self.config.get("masks")))
        self.mask_source = mask_source

    @torch.no_grad()
    def paint(self, goods01: torch.Tensor, masks: torch.Tensor, defect_type: str,
              rng: torch.Generator) -> torch.Tensor:
        """Paint `defect_type` into `masks` on the given good images ([0, 1], the painters' resolution)."""
        painter = self._painters[defect_type]
        n, res = goods01.shape[0], self.resolution
        z = torch.randn(n, painter.z_dim, generator=rng, device=rng.device).to(self.device)
        noise = torch.randn(n, painter.noise_channels, res, res, generator=rng, device=rng.device).to(self.device)
        painted, alpha = painter.paint(goods01 * 2 - 1, masks, z, noise)
        # Composited in [0, 1]: outside mask + band the result is the good image bit for bit.
        return composite(goods01, (painted + 1) / 2, alpha).contiguous()

    @torch.no_grad()
    def sample(self, n: int, defect_type: str, rng: torch.Generator) -> SyntheticBatch:
        if defect_type not in self._painters:
            raise InputError(f"inpaint: no painter for defect type '{defect_type}' (have {self.defect_types})")
        picked = torch.randint(self.goods.shape[0], (n,), generator=rng, device=rng.device).to(self.device)
        goods = self.goods[picked]
        masks = fit_masks(self.mask_source.draw(n, defect_type, rng).to(self.device), self.resolution)
        images = self.paint(goods, masks, defect_type, rng)
        labels = torch.full((n,), self.defect_types.index(defect_type), dtype=torch.long, device=self.device)
        return SyntheticBatch(images, masks, labels, goods)
