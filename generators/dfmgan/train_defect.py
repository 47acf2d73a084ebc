"""Stage 2: learn one defect type on top of a frozen backbone.

Trainable: defect mapping, residual blocks, ToMask (G side); D (initialised from
stage 1) and D_match (from scratch) on the D side. G's loss: adversarial on D
(image) and D_match (image + tanh(10 M)) plus the mode-seeking term on pairs that
share z_object (and noise) and differ in z_defect, and the path-length term when the
stage config sets `pl_weight` (lengths w.r.t. the object styles, as the reference).
The pair partners are rendered as extra samples beside the batch, as in the
reference: D, D_match and every
minibatch-stddev group see N independent images, never a duplicated background.
Same RNG, checkpoint and multi-process rules as stage 1 (gradients of G's defect
modules, D and D_match averaged).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import torch

from generators.dfmgan.augment import augment, discriminator_augment, parse_policy
from generators.dfmgan.checkpoint import load_checkpoint
from generators.dfmgan.config import STAGE2_NETWORK_KEYS, resolution_hw, resolution_value
from generators.dfmgan.grids import triplet_grid
from generators.dfmgan.losses import d_logistic, g_nonsaturating, mode_seeking, r1_penalty
from generators.dfmgan.mask_guard import EmptyMaskGuard
from generators.dfmgan.networks import Generator, build_discriminator, build_dmatch, mix_styles
from generators.dfmgan.path_length import PathLength
from generators.dfmgan.training import (Runtime, StageLog, adam, check_images, cudnn_autotune, device_of,
                                        fixed_latents, r1_weight, resume_from, run_state, save_on_main,
                                        sync_buffers, to_float, update_ema)
from inspect_train.distributed import DistContext
from inspect_train.errors import InputError


def defect_file(defect_type: str) -> str:
    return "defect_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", defect_type) + ".pt"


def build_stage2_generator(backbone_state: dict, config: dict | None = None) -> Generator:
    """The stage-1 G (the weights stage 1's D was trained against, as the reference resumes) with fresh stage-2
    modules attached (init drawn from the global RNG); `config` (default: the backbone's) sets the stage-2 wiring."""
    G = Generator(config or backbone_state["config"], backbone_state["channels"])
    G.load_state_dict(backbone_state["G"])
    G.add_defect_modules()
    return G


def stage2_ema(G: Generator, backbone_state: dict) -> Generator:
    """G's EMA copy for stage 2: the same fresh stage-2 modules, the stage-1 EMA backbone (the reference resumes
    G_ema from G_ema); the stage-2 EMA then moves that backbone towards G's frozen one."""
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    G_ema.load_state_dict({**G.state_dict(), **backbone_state["G_ema"]})  # strict: every key of both must fit
    return G_ema


def relative_to_folder(path: Path, folder: Path) -> str:
    """The backbone as the checkpoint records it: from the checkpoint's folder, so no machine's path is shipped."""
    return os.path.relpath(Path(path).resolve(), Path(folder).resolve())


def train_defect(backbone_ckpt: Path, defect_images: torch.Tensor, defect_masks: torch.Tensor, defect_type: str,
                 out_dir: Path, *, config: dict | None = None, steps: int | None = None, seed: int = 0,
                 device: str = "cpu", resume: bool = False, progress: bool = True,
                 extra: dict | None = None, dist_ctx: DistContext | None = None,
                        on_step=None) -> Path:
    ctx = dist_ctx or DistContext()
    backbone = load_checkpoint(backbone_ckpt, kind="backbone")
    net_config = dict(backbone["config"])
    for key in STAGE2_NETWORK_KEYS:  # stage-2 choices: a backbone trained before one existed lacks its key
        if config and key in config:
            net_config[key] = config[key]
    stage = dict((config or net_config)["stage2"])
    size, channels = resolution_hw(backbone, str(backbone_ckpt)), int(backbone["channels"])
    check_images(defect_images, size, f"defect '{defect_type}'", defect_masks)
    if int(defect_images.shape[1]) != channels:
        raise InputError(f"defect '{defect_type}': images have {defect_images.shape[1]} channels, the backbone "
                         f"{backbone_ckpt} was trained on {channels}")
    if defect_masks.dtype != torch.bool:
        defect_masks = defect_masks > 0
    batch = ctx.local_batch(int(stage["batch"]))
    if batch < 2 or batch % 2:
        raise InputError(f"stage2.batch must be even and at least 2 for the mode-seeking pairs (got {batch}"
                         + (f" per process over {ctx.world_size} processes)" if ctx.enabled else ")"))
    parse_policy(stage.get("augment"))
    dev = device_of(device)
    out_dir = Path(out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / defect_file(defect_type)
    total = int(steps if steps is not None else stage["steps"])
    r1_every, policy = int(stage["r1_interval"]), stage.get("augment")
    r1_gamma = r1_weight(stage, defect_images.shape[-2] * defect_images.shape[-1])
    mixing = float(stage.get("style_mixing", 0.0))  # probability; configs made before the key: none
    ms_weight, dm_weight = float(stage.get("mode_seek_weight", 0.1)), float(stage.get("dmatch_weight", 1.0))
    pl = PathLength(stage, dev, ctx, "stage2")

    torch.manual_seed(seed)
    G = build_stage2_generator(backbone, net_config).to(dev)
    for module in G.backbone_modules():
        module.requires_grad_(False)
    D = build_discriminator(net_config, channels).to(dev)
    D.load_state_dict(backbone["D"])
    Dm = build_dmatch(net_config, channels).to(dev)
    runtime = Runtime(stage, dev)
    runtime.prepare(G, D, Dm)
    G_ema = stage2_ema(G, backbone)
    g_params = [p for m in G.stage2_modules() for p in m.parameters()]
    opt_G = adam(g_params, stage, lazy_interval=pl.lazy_interval)
    opt_D = adam(list(D.parameters()) + list(Dm.parameters()), stage, lazy_interval=r1_every)
    if ctx.enabled:  # same initial weights on every rank, different data and noise
        torch.manual_seed(seed + ctx.seed_offset())
    # ADA (stage config `ada_target`): adaptive augmentation in front of D only, none for D_match (reference);
    # without it, the fixed DiffAugment policy in front of both.
    aug_D, ada = discriminator_augment(stage, channels, batch, ctx)
    aug_match = (lambda x: x) if ada else (lambda x: augment(x, policy, channels))
    parts = {"G": G, "G_ema": G_ema, "D": D, "D_match": Dm, "opt_G": opt_G, "opt_D": opt_D,
             **({"ada": ada} if ada else {}), **({"pl": pl} if pl.enabled else {})}
    resumed = resume and ckpt_path.exists()
    step, saved = 0, {}
    if resumed:  # a stopped run of this base set only (its `extra` names the base images when a cache trains it)
        saved = load_checkpoint(ckpt_path, kind="defect")
        step = resume_from(saved, ckpt_path, parts, ctx, dev, seed, "another backbone or config", extra)
    guard = EmptyMaskGuard(G_ema, stage, dev, defect_type, say=print if ctx.is_main else (lambda *a, **k: None))
    guard.carry(saved.get("mask_guard"))

    def snapshot() -> dict:  # collective under torchrun: every rank calls it at the same steps
        return {"kind": "dfmgan-defect", "config": net_config, "stage2": stage, "channels": channels,
                "resolution": resolution_value(size), "defect_type": defect_type,
                "backbone_checkpoint": relative_to_folder(backbone_ckpt, out_dir),
                "n_train_images": int(defect_images.shape[0]),
                **run_state(parts, ctx, dev, step, seed), **(extra or {}),
                **({"mask_guard": guard.record()} if guard.enabled else {})}

    grid_z, grid_zd = fixed_latents(8, G.z_dim, dev, 2024), fixed_latents(8, G.z_dim, dev, 2026)
    grid_noise = G.make_noise(8, dev, torch.Generator().manual_seed(2025))
    defect_images = defect_images.to(dev)  # resident on the device: no per-step host gather or copy
    real_masks = defect_masks.to(dev).float() * 2 - 1  # same [-1, 1] range as tanh(10 M)
    half = batch // 2

    def grid():
        d, m, g = G_ema.synthesize_defect(G_ema.mapping(grid_z), G_ema.defect_mapping(grid_zd), grid_noise,
                                          with_good=True)
        return "stage2/defect|mask|good", triplet_grid(d, m, g)

    log = StageLog(stage, total, step, ctx, out_dir / "tb" / defect_file(defect_type)[:-3],
                   f"stage 2 ({defect_type})", progress, tag="stage2/", shown=["G", "D", "D_match", "mask_area"],
                   grid=grid, save=lambda: save_on_main(ctx, snapshot(), ckpt_path), checkpoint=ckpt_path, on_step=on_step)

    guard.start(step, log.writer)
    with cudnn_autotune(dev):
        try:
            while step < total:
                D.requires_grad_(False)
                Dm.requires_grad_(False)
                z = torch.randn(batch, G.z_dim, device=dev)  # N independent objects
                z_def = torch.randn(batch + half, G.z_dim, device=dev)  # + a second defect code for `half` of them
                with runtime.autocast():
                    with torch.no_grad():
                        w = G.mapping(z)
                        if mixing > 0:  # style mixing on both mappings, one cutoff for the whole batch each
                            w = mix_styles(w, G.mapping(torch.randn_like(z)), len(G.resolutions), mixing)
                    w_def = G.defect_mapping(z_def, track_beta=0.995)
                    if mixing > 0:
                        w_def = mix_styles(w_def, G.defect_mapping(torch.randn_like(z_def)), G.n_residual, mixing)
                    noise = {r: [torch.cat([t, t[:half]]) for t in maps] for r, maps in G.make_noise(batch, dev).items()}
                    rendered, rendered_logits, _ = G.synthesize_defect(torch.cat([w, w[:half]]), w_def, noise,
                                                                       with_good=False)
                    fake, mask_logits = rendered[:batch], rendered_logits[:batch]  # what D and D_match see
                    soft_all = torch.tanh(10 * rendered_logits.float())
                    soft = soft_all[:batch]
                    loss_adv = g_nonsaturating(D(aug_D(fake)))
                    loss_match = g_nonsaturating(Dm(aug_match(torch.cat([fake.float(), soft], 1))))
                    loss_ms = mode_seeking(w_def[:half], w_def[batch:], soft_all[:half], soft_all[batch:])
                loss_G = loss_adv + dm_weight * loss_match + ms_weight * loss_ms
                log.watch({"G": loss_G}, step)
                total_G = loss_G
                if pl.due(step):  # half a batch of its own; the object styles carry the gradient (frozen mapping)
                    n = max(1, half)
                    z_pl = torch.randn(n, G.z_dim, device=dev)
                    zd_pl = torch.randn(n, G.z_dim, device=dev)
                    with runtime.autocast():
                        with torch.no_grad():
                            w_pl = G.mapping(z_pl)
                            w_pl = mix_styles(w_pl, G.mapping(torch.randn_like(z_pl)) if mixing > 0 else w_pl,
                                              len(G.resolutions), mixing)
                        w_pl = w_pl.detach().requires_grad_(True)
                        wd_pl = G.defect_mapping(zd_pl)
                        if mixing > 0:
                            wd_pl = mix_styles(wd_pl, G.defect_mapping(torch.randn_like(zd_pl)), G.n_residual, mixing)
                        pl_image, _, _ = G.synthesize_defect(w_pl, wd_pl, G.make_noise(n, dev), with_good=False)
                        pl_loss = pl.penalty(pl_image, w_pl)
                    log.keep({"PL": pl_loss})
                    log.watch({"PL": pl_loss}, step)
                    total_G = loss_G + pl_loss * pl.scale
                opt_G.zero_grad(set_to_none=True)
                total_G.backward()
                ctx.average_gradients(g_params)
                opt_G.step()
                sync_buffers(ctx, G.defect_mapping)

                D.requires_grad_(True)
                Dm.requires_grad_(True)
                idx = torch.randint(0, defect_images.shape[0], (batch,))
                idx = idx.to(dev)
                real = to_float(defect_images[idx], dev)
                real_pair = torch.cat([real, real_masks[idx]], 1)
                fake_pair = torch.cat([fake.detach().float(), soft.detach()], 1)
                with runtime.autocast():
                    real_logits = D(aug_D(real))
                    loss_D = d_logistic(real_logits, D(aug_D(fake.detach())))
                    loss_Dm = d_logistic(Dm(aug_match(real_pair)), Dm(aug_match(fake_pair)))
                if ada is not None:
                    ada.observe(real_logits)
                losses = {"D": loss_D, "D_match": loss_Dm}
                total_D = loss_D + loss_Dm
                if step % r1_every == 0:
                    with runtime.autocast():
                        r1 = r1_penalty(lambda x: D(aug_D(x)), real)
                        r1m = r1_penalty(lambda x: Dm(aug_match(x)), real_pair)
                    losses.update({"R1": r1, "R1_match": r1m})
                    log.keep({"R1": r1, "R1_match": r1m})
                    total_D = total_D + (r1 + r1m) * (r1_gamma / 2 * r1_every)
                log.watch(losses, step)
                opt_D.zero_grad(set_to_none=True)
                total_D.backward()
                ctx.average_gradients(list(D.parameters()) + list(Dm.parameters()))
                opt_D.step()

                update_ema(G_ema, G, stage, step)
                step += 1
                guard.after_step(step, step == total, log.writer)  # before step_done saves the last step's G_ema
                log.step_done(step, lambda: {"G": loss_G, "G_adv": loss_adv, "G_match": loss_match, "mode_seek": loss_ms,
                                             "mask_area": (mask_logits >= 0).float().mean(), **losses,
                                             **({"ada_p": torch.tensor(ada.p)} if ada else {})})
        finally:
            log.close()
    if not log.saved and not resumed:
        log.save()
    ctx.barrier()
    return ckpt_path
