"""Few-step painting into masks, and DiffusionGenerator: the in-loop sampler (implements
generators.base.DefectGenerator).

A draw is: n real train/good images, n fresh masks from the mask source (the inpaint painter's sources:
generators/inpaint/masks.py), Gaussian noise in the region to paint and a few DDIM / DPM-Solver steps of that
defect type's UNet. The UNet runs on a window around each mask (`sample.window` pixels a side, doubled along a side
the mask does not fit in, the whole image at most) rather than on the whole image: the region outside
mask + band is the good image bit for bit anyway, and a 64-pixel window costs a fifth of a 128-pixel image. Every
random number comes from the torch.Generator given, so a seed repeats a run; everything stays on the device.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generators.base import SyntheticBatch
from generators.diffusion.checkpoint import load_painter_checkpoint, unet_from_state
from generators.diffusion.networks import DEFECT, GOOD, sampling_scheduler
from generators.inpaint.masks import BaseMasks, DeformOptions, MaskSource, fit_masks, painting_surfaces
from generators.inpaint.networks import composite, feather
from inspect_train.errors import InputError


def windows(alpha: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample, the window that holds all of its blend region (alpha > 0): its height and width, each `window`
    doubled until the region's extent fits (at most the image's side), and its top-left corner (inside the
    image). A long thin defect gets a long thin window."""
    n, _, h, w = alpha.shape
    inside = alpha[:, 0] > 0

    def side(extent_of: torch.Tensor, size: int):
        ar = torch.arange(size, device=alpha.device)
        lo = torch.where(extent_of, ar, size).min(1).values
        hi = torch.where(extent_of, ar, -1).max(1).values
        lo, hi = torch.where(hi < 0, 0, lo), torch.where(hi < 0, 0, hi)  # an empty mask: any window
        need = hi - lo + 1
        length = torch.full_like(need, min(int(window), size))
        while bool((length < need).any()):
            length = torch.where(length < need, length * 2, length)
        length = length.clamp(max=size)
        start = ((lo + hi + 1) // 2 - length // 2).clamp(min=0)
        return length, torch.minimum(start, size - length)

    height, top = side(inside.any(2), h)
    width, left = side(inside.any(1), w)
    return height, width, top, left


@torch.no_grad()
def denoise(unet, scheduler, known: torch.Tensor, masks: torch.Tensor, label: int, steps: int,
            rng: torch.Generator, guidance: float = 1.0) -> torch.Tensor:
    """Sample images in [-1, 1] (N, C, h, w) given the blanked good images `known` and `masks`, in `steps`
    steps of `scheduler`; `guidance` > 1 pushes the defect class away from the defect-free one (two passes)."""
    n, c = known.shape[0], known.shape[1]
    device = known.device
    x = torch.randn((n, c, *known.shape[-2:]), generator=rng, device=rng.device).to(device)
    scheduler.set_timesteps(int(steps), device=device)
    x = x * scheduler.init_noise_sigma
    labels = torch.full((n,), int(label), dtype=torch.long, device=device)
    cond = torch.cat([known, masks], 1)
    for t in scheduler.timesteps:
        inp = torch.cat([scheduler.scale_model_input(x, t), cond], 1)
        if guidance != 1.0:
            both = unet(torch.cat([inp, inp]), t, class_labels=torch.cat([labels, torch.full_like(labels, GOOD)]))
            out, plain = both.sample.chunk(2)
            out = plain + float(guidance) * (out - plain)
        else:
            out = unet(inp, t, class_labels=labels).sample
        x = scheduler.step(out, t, x).prev_sample
    return x.clamp(-1, 1)


@torch.no_grad()
def paint(unet, scheduler, goods01: torch.Tensor, masks: torch.Tensor, *, band: int, steps: int, window: int,
          rng: torch.Generator, label: int = DEFECT, guidance: float = 1.0) -> torch.Tensor:
    """Paint into `masks` (N, 1, R, R) on `goods01` (N, C, R, R) in [0, 1]; composited in [0, 1]: outside mask +
    band the result is the good image bit for bit. Samples whose masks need the same window run as one batch."""
    alpha = feather(masks, band)
    hole = (alpha > 0).to(goods01.dtype)
    known = (goods01 * 2 - 1) * (1 - hole)
    height, width, top, left = windows(alpha, window)
    painted = goods01.clone()
    shapes = torch.stack([height, width], 1)
    for sh, sw in sorted(set(map(tuple, shapes.tolist()))):
        pick = ((height == sh) & (width == sw)).nonzero().flatten()
        iy = (top[pick, None] + torch.arange(sh, device=goods01.device))[:, :, None]
        ix = (left[pick, None] + torch.arange(sw, device=goods01.device))[:, None, :]
        ib = pick[:, None, None]
        crop = lambda x: x[ib, :, iy, ix].permute(0, 3, 1, 2)  # noqa: E731 - (n, C, sh, sw) windows
        out = denoise(unet, scheduler, crop(known), crop(masks.to(goods01.dtype)), label, steps, rng, guidance)
        mixed = composite(crop(goods01), (out + 1) / 2, crop(alpha))
        painted[ib, :, iy, ix] = mixed.permute(0, 2, 3, 1)
    return painted.contiguous()


class DiffusionGenerator:
    """`checkpoints`: {defect type: diffusion painter checkpoint}; `good_images`: train/good as an ImageSet or a
    uint8 (N, C, H, W) tensor (resized to the painters' resolution when it differs); `mask_source`: where to paint
    (generators/inpaint/masks.py), or None for the painters' own base masks (stored in each checkpoint);
    `sample_steps`: sampling steps (default: the config's `sample.steps`)."""

    def __init__(self, checkpoints: dict[str, Path], good_images, mask_source: MaskSource | None = None,
                 device="cpu", good_names: list[str] | None = None, sample_steps: int | None = None):
        if not checkpoints:
            raise InputError("diffusion: no painter checkpoint given")
        self.device = torch.device(device)
        self.defect_types = sorted(checkpoints)
        self._unets, self.info, shapes, base, pretrained = {}, {}, set(), {}, {}
        for defect_type in self.defect_types:
            state = load_painter_checkpoint(checkpoints[defect_type])
            mode = state.get("mode", "scratch")
            if mode == "pretrained":
                pretrained[defect_type] = state
            else:
                self._unets[defect_type] = unet_from_state(state, self.device)
            self.info[defect_type] = {k: state.get(k) for k in ("defect_type", "step", "partition", "manifest",
                                                                 "category", "base", "weights")}
            self.info[defect_type].update(config=state["config"].get("name"), mode=mode)
            shapes.add((int(state["resolution"]), int(state["channels"]), mode))
            base[defect_type] = state["base_masks"]
            self.config = state["config"]
        if len(shapes) > 1:
            raise InputError(f"diffusion: painters disagree on resolution/channels/mode {sorted(shapes)}")
        self.resolution, self.channels, self.mode = shapes.pop()
        sample = self.config["sample"]
        self.steps = int(sample_steps if sample_steps is not None else sample["steps"])
        if self.steps < 1:
            raise InputError(f"--diffusion-steps {self.steps}: must be at least 1")
        self.window = int(sample.get("window") or self.resolution)
        self.guidance = float(sample.get("guidance", 1.0))
        self.band = int(self.config["band"])
        if self.mode == "pretrained":
            from generators.diffusion.pretrained import PretrainedPainters

            self._pretrained = PretrainedPainters(pretrained, self.device, self.steps)
        else:
            self.scheduler = sampling_scheduler(self.config)
        for defect_type in self.defect_types:
            self.info[defect_type].update(sample_steps=self.steps, scheduler=sample.get("scheduler", "ddim"))
        self.goods, self.good_names = painting_surfaces(good_images, good_names, self.channels, self.resolution,
                                                        self.device, "diffusion")
        if mask_source is None:
            mask_source = BaseMasks(base, self.resolution, self.device,
                                    DeformOptions.from_config(self.config.get("masks")))
        self.mask_source = mask_source

    @torch.no_grad()
    def paint(self, goods01: torch.Tensor, masks: torch.Tensor, defect_type: str,
              rng: torch.Generator) -> torch.Tensor:
        """Paint `defect_type` into `masks` on the given good images ([0, 1], the painters' resolution)."""
        if defect_type not in self.defect_types:
            raise InputError(f"diffusion: no painter for defect type '{defect_type}' (have {self.defect_types})")
        if self.mode == "pretrained":
            return self._pretrained.paint(goods01, masks, defect_type, rng)
        return paint(self._unets[defect_type], self.scheduler, goods01, masks, band=self.band, steps=self.steps,
                     window=self.window, rng=rng, guidance=self.guidance)

    @torch.no_grad()
    def sample(self, n: int, defect_type: str, rng: torch.Generator) -> SyntheticBatch:
        if defect_type not in self.defect_types:
            raise InputError(f"diffusion: no painter for defect type '{defect_type}' (have {self.defect_types})")
        picked = torch.randint(self.goods.shape[0], (n,), generator=rng, device=rng.device).to(self.device)
        goods = self.goods[picked]
        masks = fit_masks(self.mask_source.draw(n, defect_type, rng).to(self.device), self.resolution)
        images = self.paint(goods, masks, defect_type, rng)
        labels = torch.full((n,), self.defect_types.index(defect_type), dtype=torch.long, device=self.device)
        return SyntheticBatch(images, masks, labels, goods)
