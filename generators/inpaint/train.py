"""Train one defect type's painter on its base images (images + masks) and train/good.

Each step has three parts:

Steps run on windows of `train.crop` pixels around the defects (whole images when it is null): the painter is
convolutional, so it learns on windows and paints whole images when sampling, at a quarter of the cost for a
64-pixel window at 128.

- reconstruction: a real base defect image with its defect region (mask + band) hidden is painted back;
  L1 inside that region teaches what this defect looks like on this part;
- adversarial: deformed base masks are painted on real good images; a local critic compares crops around the
  painted defects with crops around real ones, and a match critic compares (image, mask) pairs, so a defect must
  look real and sit where its mask is (`nsgan`: non-saturating logistic + R1, as DFMGAN; `r3gan`: the
  relativistic pairing loss with R1 and R2). DiffAugment on every critic input, as the base set is tiny;
- diversity: pairs share the good image and mask and differ in the latent and noise; their distance over the
  distance of their painted regions is minimised (mode seeking), so the latent is not ignored.

The bookkeeping is DFMGAN's (generators/dfmgan/training.py): progress bar, TensorBoard scalars and a grid
(good | mask | painted | real base defects), atomic checkpoints with RNG state (resume is exact), a NaN/inf loss
stops with the last good checkpoint intact. The masks of each step come from a generator seeded by (seed, step),
so they need no saved state. Under torchrun every rank runs the same training (a painter is small) and rank 0
writes.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from generators.dfmgan.augment import augment, parse_policy
from generators.dfmgan.grids import overlay, to_unit
from generators.dfmgan.losses import d_logistic, g_nonsaturating, r1_penalty
from generators.dfmgan.training import (StageLog, adam, check_images, device_of, resume_from, run_state,
                                        save_on_main, to_float, update_ema)
from generators.inpaint.checkpoint import KIND, load_painter_checkpoint, painter_file
from generators.inpaint.config import LOSSES
from generators.inpaint.masks import BaseMasks, DeformOptions, flip_turn
from generators.inpaint.networks import build_networks
from inspect_train.distributed import DistContext
from inspect_train.errors import InputError, ResumeRefused


# ----------------------------------------------------------------------------- losses


def g_adversarial(loss: str, fake_logits: torch.Tensor, real_logits: torch.Tensor | None) -> torch.Tensor:
    if loss == "nsgan":
        return g_nonsaturating(fake_logits)
    return F.softplus(real_logits - fake_logits).mean()  # r3gan: fake should out-score its paired real


def d_adversarial(loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    if loss == "nsgan":
        return d_logistic(real_logits, fake_logits)
    return F.softplus(fake_logits - real_logits).mean()


def l1_in_region(painted: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the pixels of `region` (N, 1, H, W), every channel."""
    weight = region.expand_as(target)
    return ((painted - target).abs() * weight).sum() / weight.sum().clamp(min=1.0)


def mode_seeking(z1: torch.Tensor, z2: torch.Tensor, out1: torch.Tensor, out2: torch.Tensor,
                 region: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Latent distance over painted-region distance, per pair (small when different codes paint differently)."""
    dz = (z1 - z2).abs().mean(1)
    weight = region.expand_as(out1)
    dout = ((out1 - out2).abs() * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp(min=1.0)
    return (dz / (dout + eps)).mean()


def random_mask_pixel(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of one random defect pixel per mask (global RNG; any pixel for an empty mask)."""
    n, _, h, w = mask.shape
    flat = mask.reshape(n, h * w).float() + 1e-8
    pick = torch.multinomial(flat, 1).squeeze(1)
    return pick // w, pick % w


def crop_at(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """size x size crops centred on (cy, cx), moved inside the image; differentiable in x."""
    n, _, h, w = x.shape
    top = (cy - size // 2).clamp(0, h - size)
    left = (cx - size // 2).clamp(0, w - size)
    steps = torch.arange(size, device=x.device)
    iy = (top.to(x.device)[:, None] + steps)[:, :, None]
    ix = (left.to(x.device)[:, None] + steps)[:, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x[batch, :, iy, ix].permute(0, 3, 1, 2)


def painter_grid(goods, masks, painted, reals) -> torch.Tensor:
    """One row per sample: good | mask on the good | painted | a real base defect (float (3, H, W) in [0, 1])."""
    g, p, r = to_unit(goods), to_unit(painted), to_unit(reals)
    rows = torch.stack([g, overlay(g, masks > 0.5), p, r], dim=1).flatten(0, 1)
    return make_grid(rows, nrow=4, padding=1, pad_value=1.0)


# ----------------------------------------------------------------------------- the loop


def train_inpaint(defect_images: torch.Tensor, defect_masks: torch.Tensor, good_images: torch.Tensor,
                  defect_type: str, out_dir: Path, *, config: dict, steps: int | None = None, loss: str | None = None,
                  seed: int = 0, device: str = "cpu", resume: bool = False, progress: bool = True,
                  extra: dict | None = None, dist_ctx: DistContext | None = None, on_step=None) -> Path:
    """Train (or, with `resume`, continue) the painter of `defect_type`; returns its checkpoint path.

    defect_images uint8 (N, C, R, R) with bool masks (N, 1, R, R): the partition's base set of this type only;
    good_images uint8 (M, C, R, R): train/good. R is the config's resolution."""
    ctx = dist_ctx or DistContext()
    stage = dict(config["train"])
    res = int(config["resolution"])
    check_images(defect_images, res, f"defect '{defect_type}'", defect_masks)
    check_images(good_images, res, "train/good")
    channels = int(defect_images.shape[1])
    if int(good_images.shape[1]) != channels:
        raise InputError(f"defect '{defect_type}': {channels} channel(s), but train/good has {good_images.shape[1]}")
    masks_bool = defect_masks > 0
    if (masks_bool.flatten(1).sum(1) == 0).any():
        raise InputError(f"defect '{defect_type}': a base image has an empty mask")
    out_dir = Path(out_dir)
    ckpt_path = out_dir / painter_file(defect_type)
    if loss is None and resume and ckpt_path.exists():  # a resumed run keeps its loss unless told otherwise
        loss = load_painter_checkpoint(ckpt_path).get("loss")
    loss = loss or stage.get("loss", "nsgan")
    if loss not in LOSSES:
        raise InputError(f"--loss {loss}: choose {', '.join(LOSSES)}")
    policy = stage.get("augment")
    parse_policy(policy)
    dev = device_of(device)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    total = int(steps if steps is not None else stage["steps"])
    batch, half = int(stage["batch"]), int(stage["batch"]) // 2
    w_rec, w_local = float(stage.get("rec_weight", 20.0)), float(stage.get("local_weight", 1.0))
    w_match, w_ms = float(stage.get("match_weight", 1.0)), float(stage.get("ms_weight", 0.02))
    r1_every, r1_gamma = int(stage.get("r1_interval", 4)), float(stage.get("r1_gamma", 1.0))
    r2_gamma = float(stage.get("r2_gamma", r1_gamma))
    adversarial = w_local > 0 or w_match > 0
    crop = int(config["local_d"]["crop"])
    window = int(stage.get("crop") or res)  # training window (the painter paints whole images when sampling)
    options = DeformOptions.from_config(config.get("masks"))

    torch.manual_seed(seed)
    painter, d_local, d_match = (m.to(dev) for m in build_networks(config, channels))
    painter_ema = copy.deepcopy(painter).eval().requires_grad_(False)
    opt_G = adam(painter.parameters(), stage)
    d_params = list(d_local.parameters()) + list(d_match.parameters())
    opt_D = adam(d_params, stage, lazy_interval=r1_every)
    parts = {"painter": painter, "painter_ema": painter_ema, "D_local": d_local, "D_match": d_match,
             "opt_G": opt_G, "opt_D": opt_D}
    step = 0
    resumed = resume and ckpt_path.exists()
    if resumed:
        step = _resume(ckpt_path, parts, loss, extra, ctx, dev, seed)

    base = BaseMasks({defect_type: masks_bool}, res, dev, options)
    real_u8, real_masks = defect_images, masks_bool.float()
    z_dim, noise_ch = painter.z_dim, painter.noise_channels

    def snapshot() -> dict:  # collective under torchrun: every rank calls it at the same steps
        return {"kind": KIND, "config": config, "loss": loss, "channels": channels, "resolution": res,
                "defect_type": defect_type, "n_train_images": int(defect_images.shape[0]),
                "base_masks": masks_bool.cpu(), **run_state(parts, ctx, dev, step, seed), **(extra or {})}

    show = min(4, int(good_images.shape[0]))
    fixed = torch.Generator(device=dev).manual_seed(2024)
    grid_goods = to_float(good_images[:show], dev)
    grid_masks = base.draw(show, defect_type, fixed)
    grid_z = torch.randn(show, z_dim, generator=torch.Generator().manual_seed(2025)).to(dev)
    grid_noise = torch.randn(show, noise_ch, res, res, generator=torch.Generator().manual_seed(2026)).to(dev)
    grid_reals = to_float(real_u8[torch.arange(show) % real_u8.shape[0]], dev)

    def grid():
        painted, _ = painter_ema(grid_goods, grid_masks, grid_z, grid_noise)
        return "inpaint/good|mask|painted|real", painter_grid(grid_goods, grid_masks, painted, grid_reals)

    log = StageLog(stage, total, step, ctx, out_dir / "tb" / painter_file(defect_type)[:-3],
                   f"inpaint ({defect_type})", progress, tag="inpaint/", shown=["rec", "G", "D"], grid=grid,
                   save=lambda: save_on_main(ctx, snapshot(), ckpt_path), checkpoint=ckpt_path, on_step=on_step)

    def critics(images, masks, cy, cx, detach=False):
        images = images.detach() if detach else images
        local = d_local(augment(crop_at(images, cy, cx, crop), policy, channels))
        match = d_match(augment(torch.cat([images, masks], 1), policy, channels))
        return local, match

    try:
        while step < total:
            step_rng = torch.Generator(device=dev).manual_seed(int(seed) * 1_000_003 + step)
            idx = torch.randint(0, real_u8.shape[0], (batch,))
            both = flip_turn(torch.cat([to_float(real_u8[idx], dev), real_masks[idx].to(dev)], 1), step_rng,
                             options.flips, options.turns)
            real, rmask = both[:, :channels], both[:, channels:]
            goods = to_float(good_images[torch.randint(0, good_images.shape[0], (half,))], dev)
            fmask = base.draw(half, defect_type, step_rng)
            if window < res:  # train on windows around the defects: the painter is convolutional
                ry, rx = random_mask_pixel(rmask)
                real, rmask = crop_at(real, ry, rx, window), crop_at(rmask, ry, rx, window)
                fy, fx = random_mask_pixel(fmask)
                goods, fmask = crop_at(goods, fy, fx, window), crop_at(fmask, fy, fx, window)
            # Mode-seeking pairs: the same good image and mask, a different latent and noise.
            goods, fmask = torch.cat([goods, goods]), torch.cat([fmask, fmask])
            z = torch.randn(2 * batch, z_dim, device=dev)
            noise = torch.randn(2 * batch, noise_ch, window, window, device=dev)

            d_local.requires_grad_(False)
            d_match.requires_grad_(False)
            out, alpha = painter(torch.cat([real, goods]), torch.cat([rmask, fmask]), z, noise)
            rec, fake = out[:batch], out[batch:]
            hole = (alpha[:batch] > 0).float()
            loss_rec = l1_in_region(rec, real, hole)
            loss_ms = mode_seeking(z[batch:batch + half], z[batch + half:], fake[:half], fake[half:],
                                   alpha[batch:batch + half])
            losses_G = {"rec": loss_rec, "mode_seek": loss_ms}
            loss_G = w_rec * loss_rec + w_ms * loss_ms
            if adversarial:
                fy, fx = random_mask_pixel(fmask)
                ry, rx = random_mask_pixel(rmask)
                fake_local, fake_match = critics(fake, fmask, fy, fx)
                real_local, real_match = None, None
                if loss == "r3gan":  # the pairing needs the real scores; no gradient flows to them
                    with torch.no_grad():
                        real_local, real_match = critics(real, rmask, ry, rx)
                g_local = g_adversarial(loss, fake_local, real_local)
                g_match = g_adversarial(loss, fake_match, real_match)
                losses_G.update({"G_local": g_local, "G_match": g_match})
                loss_G = loss_G + w_local * g_local + w_match * g_match
            losses_G["G"] = loss_G
            log.watch({"G": loss_G}, step)
            opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
            opt_G.step()

            losses_D = {}
            if adversarial:
                d_local.requires_grad_(True)
                d_match.requires_grad_(True)
                fake_local, fake_match = critics(fake, fmask, fy, fx, detach=True)
                real_local, real_match = critics(real, rmask, ry, rx)
                loss_Dl = d_adversarial(loss, real_local, fake_local)
                loss_Dm = d_adversarial(loss, real_match, fake_match)
                losses_D = {"D": loss_Dl + loss_Dm, "D_local": loss_Dl, "D_match": loss_Dm}
                total_D = loss_Dl + loss_Dm
                if step % r1_every == 0:
                    local_fn = lambda x: d_local(augment(x, policy, channels))  # noqa: E731
                    match_fn = lambda x: d_match(augment(x, policy, channels))  # noqa: E731
                    real_crops = crop_at(real, ry, rx, crop)
                    r1 = r1_penalty(local_fn, real_crops) + r1_penalty(match_fn, torch.cat([real, rmask], 1))
                    losses_D["R1"] = r1
                    total_D = total_D + r1 * (r1_gamma / 2 * r1_every)
                    if loss == "r3gan":
                        fake_crops = crop_at(fake.detach(), fy, fx, crop)
                        fake_pairs = torch.cat([fake.detach(), fmask], 1)
                        r2 = r1_penalty(local_fn, fake_crops) + r1_penalty(match_fn, fake_pairs)
                        losses_D["R2"] = r2
                        total_D = total_D + r2 * (r2_gamma / 2 * r1_every)
                log.watch(losses_D, step)
                opt_D.zero_grad(set_to_none=True)
                total_D.backward()
                opt_D.step()

            update_ema(painter_ema, painter, stage, step)
            step += 1
            log.step_done(step, lambda: {**losses_G, **losses_D})
    finally:
        log.close()
    if not log.saved and not resumed:
        log.save()
    ctx.barrier()
    return ckpt_path


def _resume(path: Path, parts: dict, loss: str, extra: dict | None, ctx, dev, seed: int) -> int:
    """Weights, optimiser states and RNG of a stopped run; refuses another loss or another base set."""
    state = load_painter_checkpoint(path)
    if state.get("loss") != loss:
        raise ResumeRefused(f"{path}: was trained with --loss {state.get('loss')}, not {loss}")
    return resume_from(state, path, parts, ctx, dev, seed, "another config", extra)
