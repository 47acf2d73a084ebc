"""Train one defect type's diffusion painter on its base images (images + masks) and train/good.

Each step draws a batch from two kinds of example, on windows of `train.crop` pixels around the masks (whole
images when it is null; the UNet is convolutional and paints windows when sampling too):

- a base defect image of this type (flipped like the GAN painter's), class 1: its defect region (mask + band) is
  blanked in the conditioning image, noise is added at a random DDPM timestep and the UNet learns to denoise it;
- a train/good image (`train.good_fraction` of the batch), class 0, with a deformed base mask: the same, so the
  painter learns the part's defect-free surface from the many good images.

The DDPM loss (the diffusers `prediction_type`'s target: noise, velocity or the image) counts only inside mask +
band; outside it the painted image is the real image (composited when sampling). An EMA of the weights (diffusers'
EMAModel, with warm-up) is what is sampled. The bookkeeping is the other learned generators' (generators/dfmgan/
training.py): progress bar with steps/s and ETA, TensorBoard scalars and a grid (good | mask | painted | real base
defects), atomic checkpoints with RNG state (resume continues exactly: every random number of a step comes from a
generator seeded by (seed, step)), a NaN/inf loss stops with the last good checkpoint intact. Under torchrun every
rank runs the same small training and rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generators.dfmgan.training import (StageLog, check_images, device_of, resume_from, run_state, save_on_main,
                                        to_float)
from generators.diffusion.checkpoint import KIND, load_painter_checkpoint, painter_file
from generators.diffusion.networks import DEFECT, GOOD, build_unet, training_scheduler, sampling_scheduler
from generators.diffusion.sampler import paint
from generators.inpaint.masks import BaseMasks, DeformOptions, flip_turn
from generators.inpaint.networks import feather
from generators.inpaint.train import crop_at, painter_grid
from inspect_train.distributed import DistContext
from inspect_train.errors import InputError


def region_mse(predicted: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels of `region` (N, 1, H, W), every channel."""
    weight = region.expand_as(target)
    return ((predicted - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def diffusion_loss(unet, scheduler, x0: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, band: int,
                   noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The DDPM objective of painting `x0` ([-1, 1]) into `masks`, counted inside mask + band only."""
    hole = (feather(masks, band) > 0).to(x0.dtype)
    known = x0 * (1 - hole)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    out = unet(torch.cat([noisy, known, masks.to(x0.dtype)], 1), timesteps, class_labels=labels).sample
    kind = scheduler.config.prediction_type
    target = noise if kind == "epsilon" else scheduler.get_velocity(x0, noise, timesteps) if kind == "v_prediction" \
        else x0
    return region_mse(out, target, hole)


def random_mask_pixel(mask: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of one random defect pixel per mask, drawn from `rng`."""
    n, _, h, w = mask.shape
    flat = mask.reshape(n, h * w).float() + 1e-8
    pick = torch.multinomial(flat.to(rng.device), 1, generator=rng).squeeze(1).to(mask.device)
    return pick // w, pick % w


def train_diffusion(defect_images: torch.Tensor, defect_masks: torch.Tensor, good_images: torch.Tensor,
                    defect_type: str, out_dir: Path, *, config: dict, steps: int | None = None, seed: int = 0,
                    device: str = "cpu", resume: bool = False, progress: bool = True, extra: dict | None = None,
                    dist_ctx: DistContext | None = None, on_step=None) -> Path:
    """Train (or, with `resume`, continue) the diffusion painter of `defect_type`; returns its checkpoint path.

    defect_images uint8 (N, C, R, R) with bool masks (N, 1, R, R): the partition's base set of this type only;
    good_images uint8 (M, C, R, R): train/good. R is the config's resolution."""
    from diffusers.training_utils import EMAModel

    ctx = dist_ctx or DistContext()
    stage = dict(config["train"])
    res, band = int(config["resolution"]), int(config["band"])
    check_images(defect_images, res, f"defect '{defect_type}'", defect_masks)
    check_images(good_images, res, "train/good")
    channels = int(defect_images.shape[1])
    if int(good_images.shape[1]) != channels:
        raise InputError(f"defect '{defect_type}': {channels} channel(s), but train/good has {good_images.shape[1]}")
    if good_images.shape[0] == 0:
        raise InputError("train/good: no images")
    masks_bool = defect_masks > 0
    if (masks_bool.flatten(1).sum(1) == 0).any():
        raise InputError(f"defect '{defect_type}': a base image has an empty mask")
    out_dir = Path(out_dir)
    ckpt_path = out_dir / painter_file(defect_type)
    dev = device_of(device)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    total = int(steps if steps is not None else stage["steps"])
    batch = int(stage["batch"])
    n_good = int(round(batch * float(stage.get("good_fraction", 0.0))))
    n_defect = batch - n_good
    window = int(stage.get("crop") or res)
    options = DeformOptions.from_config(config.get("masks"))

    torch.manual_seed(seed)
    unet = build_unet(config, channels).to(dev).train()
    unet_ema = build_unet(config, channels).to(dev).eval().requires_grad_(False)
    ema_cfg = stage.get("ema") or {}
    ema = EMAModel(unet.parameters(), decay=float(ema_cfg.get("decay", 0.999)), use_ema_warmup=True,
                   inv_gamma=float(ema_cfg.get("inv_gamma", 1.0)), power=float(ema_cfg.get("power", 2 / 3)))
    opt = torch.optim.AdamW(unet.parameters(), lr=float(stage["lr"]), betas=tuple(float(b) for b in stage["betas"]),
                            weight_decay=float(stage.get("weight_decay", 0.0)))
    clip = float(stage.get("grad_clip", 1.0))
    scheduler = training_scheduler(config)
    parts = {"unet": unet, "opt": opt, "ema": ema}
    step = 0
    resumed = resume and ckpt_path.exists()
    if resumed:
        step = resume_from(load_painter_checkpoint(ckpt_path), ckpt_path, parts, ctx, dev, seed, "another config",
                           extra)
        ema.to(dev)

    base = BaseMasks({defect_type: masks_bool}, res, dev, options)
    real_masks = masks_bool.float()
    timesteps = int(scheduler.config.num_train_timesteps)

    def ema_net():
        ema.copy_to(unet_ema.parameters())
        return unet_ema

    def snapshot() -> dict:  # collective under torchrun: every rank calls it at the same steps
        return {"kind": KIND, "config": config, "channels": channels, "resolution": res, "defect_type": defect_type,
                "n_train_images": int(defect_images.shape[0]), "base_masks": masks_bool.cpu(),
                "unet_ema": {k: v.detach().cpu() for k, v in ema_net().state_dict().items()},
                **run_state(parts, ctx, dev, step, seed), **(extra or {})}

    show = min(4, int(good_images.shape[0]))
    grid_goods = (to_float(good_images[:show], dev) + 1) / 2
    grid_masks = base.draw(show, defect_type, torch.Generator(device=dev).manual_seed(2024))
    grid_reals = to_float(defect_images[torch.arange(show) % defect_images.shape[0]], dev)
    grid_sampler = sampling_scheduler(config)
    sample = config["sample"]

    def grid():
        painted = paint(ema_net(), grid_sampler, grid_goods, grid_masks, band=band, steps=int(sample["steps"]),
                        window=int(sample.get("window") or res), rng=torch.Generator(device=dev).manual_seed(2026),
                        guidance=float(sample.get("guidance", 1.0)))
        return "diffusion/good|mask|painted|real", painter_grid(grid_goods * 2 - 1, grid_masks, painted * 2 - 1,
                                                                grid_reals)

    log = StageLog(stage, total, step, ctx, out_dir / "tb" / painter_file(defect_type)[:-3],
                   f"diffusion ({defect_type})", progress, tag="diffusion/", shown=["loss"], grid=grid,
                   save=lambda: save_on_main(ctx, snapshot(), ckpt_path), checkpoint=ckpt_path, on_step=on_step)
    try:
        while step < total:
            rng = torch.Generator(device=dev).manual_seed(int(seed) * 1_000_003 + step)
            idx = torch.randint(0, defect_images.shape[0], (n_defect,), generator=rng, device=rng.device).cpu()
            both = flip_turn(torch.cat([to_float(defect_images[idx], dev), real_masks[idx].to(dev)], 1), rng,
                             options.flips, options.turns)
            images, masks = both[:, :channels], both[:, channels:]
            if n_good:
                gidx = torch.randint(0, good_images.shape[0], (n_good,), generator=rng, device=rng.device).cpu()
                images = torch.cat([images, to_float(good_images[gidx], dev)])
                masks = torch.cat([masks, base.draw(n_good, defect_type, rng)])
            if window < res:
                cy, cx = random_mask_pixel(masks, rng)
                images, masks = crop_at(images, cy, cx, window), crop_at(masks, cy, cx, window)
            labels = torch.tensor([DEFECT] * n_defect + [GOOD] * n_good, device=dev)
            noise = torch.randn(images.shape, generator=rng, device=rng.device).to(dev)
            t = torch.randint(0, timesteps, (batch,), generator=rng, device=rng.device).to(dev)
            loss = diffusion_loss(unet, scheduler, images, masks, labels, band, noise, t)
            log.watch({"loss": loss}, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(unet.parameters(), clip)
            opt.step()
            ema.step(unet.parameters())
            step += 1
            log.step_done(step, lambda: {"loss": loss})
    finally:
        log.close()
    if not log.saved and not resumed:
        log.save()
    ctx.barrier()
    return ckpt_path
