"""Stage 1: a data-efficient StyleGAN2 on defect-free images.

Non-saturating logistic loss, lazy R1 on reals, lazy path-length regularisation of
G when the stage config sets `pl_weight`, EMA of G, differentiable
augmentation on everything D sees (fixed DiffAugment, or adaptive when the stage
config sets `ada_target`). All randomness comes from the global torch
RNG (seeded once, saved in every checkpoint), so a resumed run continues with
exactly the numbers an uninterrupted run would have produced.

Under torchrun (`dist_ctx` with several ranks): identical initial weights on
every rank (same seed), per-rank data/noise (seed + rank offset), each rank on
its share of the global batch, gradients and tracked buffers averaged, so the
weights and EMA stay identical; only rank 0 logs, shows progress and writes.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from generators.dfmgan.augment import discriminator_augment, parse_policy
from generators.dfmgan.config import check_config, resolution_hw, resolution_value
from generators.dfmgan.checkpoint import load_checkpoint
from generators.dfmgan.grids import image_grid
from generators.dfmgan.losses import d_logistic, g_nonsaturating, r1_penalty
from generators.dfmgan.networks import Generator, build_discriminator, mix_styles
from generators.dfmgan.path_length import PathLength
from generators.dfmgan.training import (Runtime, StageLog, adam, check_images, cudnn_autotune, device_of, fixed_latents,
                                        r1_weight, resume_from, run_state, save_on_main, sync_buffers, to_float,
                                        update_ema)
from inspect_train.distributed import DistContext

BACKBONE_FILE = "backbone.pt"


def train_backbone(train_good: torch.Tensor, config: dict, out_dir: Path, *, steps: int | None = None,
                   seed: int = 0, device: str = "cpu", resume: bool = False, progress: bool = True,
                   dist_ctx: DistContext | None = None,
                   on_step=None) -> Path:
    ctx = dist_ctx or DistContext()
    check_config(config)
    size = resolution_hw(config)
    check_images(train_good, size, "train/good")
    stage = config["stage1"]
    parse_policy(stage.get("augment"))
    dev = device_of(device)
    out_dir = Path(out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / BACKBONE_FILE
    channels = int(train_good.shape[1])
    total = int(steps if steps is not None else stage["steps"])
    batch, r1_every = ctx.local_batch(int(stage["batch"])), int(stage["r1_interval"])
    r1_gamma = r1_weight(stage, train_good.shape[-2] * train_good.shape[-1])
    mixing = float(stage.get("style_mixing", 0.0))  # probability; configs made before the key: none
    pl = PathLength(stage, dev, ctx, "stage1")

    torch.manual_seed(seed)
    G = Generator(config, channels).to(dev)
    D = build_discriminator(config, channels).to(dev)
    runtime = Runtime(stage, dev)
    runtime.prepare(G, D)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    train_good = train_good.to(dev)  # resident on the device: no host gather or copy per step
    opt_G = adam(G.parameters(), stage, lazy_interval=pl.lazy_interval)
    opt_D = adam(D.parameters(), stage, lazy_interval=r1_every)
    if ctx.enabled:  # same initial weights on every rank, different data and noise
        torch.manual_seed(seed + ctx.seed_offset())
    aug_D, ada = discriminator_augment(stage, channels, batch, ctx)
    parts = {"G": G, "G_ema": G_ema, "D": D, "opt_G": opt_G, "opt_D": opt_D, **({"ada": ada} if ada else {}),
             **({"pl": pl} if pl.enabled else {})}
    resumed = resume and ckpt_path.exists()
    step = resume_from(load_checkpoint(ckpt_path, kind="backbone"), ckpt_path, parts, ctx, dev, seed,
                       "another config or channel count") if resumed else 0

    def snapshot() -> dict:  # collective under torchrun: every rank calls it at the same steps
        return {"kind": "dfmgan-backbone", "config": config, "channels": channels, "resolution": resolution_value(size),
                "n_train_images": int(train_good.shape[0]), **run_state(parts, ctx, dev, step, seed)}

    grid_z = fixed_latents(16, G.z_dim, dev)
    grid_noise = G.make_noise(16, dev, torch.Generator().manual_seed(2025))
    log = StageLog(stage, total, step, ctx, out_dir / "tb", "stage 1 (backbone)", progress,
                   tag="stage1/loss_", shown=["G", "D", "R1"],
                   grid=lambda: ("stage1/samples_ema",
                                 image_grid(G_ema.synthesize(G_ema.mapping(grid_z), grid_noise), nrow=4)),
                   save=lambda: save_on_main(ctx, snapshot(), ckpt_path), checkpoint=ckpt_path, on_step=on_step)
    with cudnn_autotune(dev):
        try:
            while step < total:
                # Generator step: D frozen, gradients flow through augmentation into G.
                D.requires_grad_(False)
                z = torch.randn(batch, G.z_dim, device=dev)
                with runtime.autocast():
                    w = G.mapping(z, track_beta=0.995)
                    if mixing > 0:
                        w = mix_styles(w, G.mapping(torch.randn_like(z)), len(G.resolutions), mixing)
                    fake = G.synthesize(w, G.make_noise(batch, dev))
                    loss_G = g_nonsaturating(D(aug_D(fake)))
                log.watch({"G": loss_G}, step)
                total_G = loss_G
                if pl.due(step):  # on half a batch of its own (the reference's); joins G's loss as R1 joins D's
                    n = max(1, batch // 2)
                    z_pl = torch.randn(n, G.z_dim, device=dev)
                    with runtime.autocast():
                        w_pl = G.mapping(z_pl)
                        w_pl = mix_styles(w_pl, G.mapping(torch.randn_like(z_pl)) if mixing > 0 else w_pl,
                                          len(G.resolutions), mixing)
                        pl_loss = pl.penalty(G.synthesize(w_pl, G.make_noise(n, dev)), w_pl)
                    log.keep({"PL": pl_loss})
                    log.watch({"PL": pl_loss}, step)
                    total_G = loss_G + pl_loss * pl.scale
                opt_G.zero_grad(set_to_none=True)
                total_G.backward()
                ctx.average_gradients(G.parameters())
                opt_G.step()
                sync_buffers(ctx, G.mapping)

                # Discriminator step on the same fakes (detached) and a fresh real batch.
                D.requires_grad_(True)
                idx = torch.randint(0, train_good.shape[0], (batch,))
                real = to_float(train_good[idx.to(dev)], dev)
                with runtime.autocast():
                    real_logits = D(aug_D(real))
                    loss_D = d_logistic(real_logits, D(aug_D(fake.detach())))
                if ada is not None:
                    ada.observe(real_logits)
                losses = {"D": loss_D}
                if step % r1_every == 0:
                    with runtime.autocast():
                        r1 = r1_penalty(lambda x: D(aug_D(x)), real)
                    losses["R1"] = r1
                    log.keep({"R1": r1})
                    loss_D = loss_D + r1 * (r1_gamma / 2 * r1_every)
                log.watch(losses, step)
                opt_D.zero_grad(set_to_none=True)
                loss_D.backward()
                ctx.average_gradients(D.parameters())
                opt_D.step()

                update_ema(G_ema, G, stage, step)
                step += 1
                log.step_done(step, lambda: {"G": loss_G, **losses, **({"ada_p": torch.tensor(ada.p)} if ada else {})})
        finally:
            log.close()
    if not log.saved and not resumed:  # steps=0: still leave a checkpoint behind
        log.save()
    ctx.barrier()
    return ckpt_path

