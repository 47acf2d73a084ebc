"""The diffusion painter's `gan` subcommand: fit-diffusion trains one defect type's painter on a partition's base
set and train/good (the same small training on every rank under torchrun; rank 0 writes)."""

from __future__ import annotations

from generators.diffusion.checkpoint import painter_file
from generators.diffusion.config import load_config
from generators.training_cli import (add_partition_flags, add_training_flags, check_restart, join_processes,
                                     partition_base_set, start_writing, train_and_report)
from inspect_train.errors import InputError
from inspect_train.output_paths import portable_path


def add_commands(sub) -> None:
    fd = sub.add_parser("fit-diffusion", help="a diffusion defect painter: one defect type, painted into masks on "
                                               "real good images, trained on a partition's base set and train/good")
    add_partition_flags(fd)
    fd.add_argument("--diffusion-weights", metavar="DIR", default=None,
                    help="train LoRA + a token for the defect type on this local StableDiffusionInpaintPipeline "
                         "folder (or its Hugging Face cache entry; never downloaded) instead of the from-scratch "
                         "painter (default config then: diffusion-sd)")
    add_training_flags(fd, None, "diffusion-{tiny, 64, 128}, default diffusion-128; diffusion-sd with "
                                 "--diffusion-weights")
    fd.set_defaults(func=run_fit_diffusion)


def run_fit_diffusion(args) -> int:
    from generators.diffusion.api import fit_diffusion

    weights = args.diffusion_weights
    if weights:
        from generators.diffusion.pretrained import load_pretrained_config, resolve_weights, train_pretrained

        weights = resolve_weights(weights)
        config = load_pretrained_config(args.config or "diffusion-sd")
    else:
        config = load_config(args.config or "diffusion-128")
    res = int(config["resolution"])
    data, base, manifest, out = partition_base_set(args, (res, res))
    if len(data.train_good) == 0:
        raise InputError(f"{data.index.folder / 'train' / 'good'}: no images")
    check_restart(out / painter_file(args.defect), args)
    chosen = data.defects[args.defect].select(base)
    extra = {"category": args.category, "manifest": portable_path(manifest.path, out),
             "partition": int(args.partition), "base": list(base)}
    ctx = join_processes(args.device, args.threads)
    start_writing(ctx, out, manifest)
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"diffusion: defect '{args.defect}', partition {args.partition}: {len(base)} base image(s) and "
        f"{len(data.train_good)} train/good at {res}x{res}, config {config['name']} (manifest {manifest.path})"
        + (f", LoRA + token on {weights}" if weights else ""))
    if weights:
        return train_and_report(ctx, say, lambda: train_pretrained(
            chosen.images, chosen.masks, data.train_good.images, args.defect, out, config=config, weights=weights,
            resolution=res, steps=args.steps, seed=args.seed, device=str(ctx.device), resume=args.resume,
            progress=not args.quiet, extra=extra, dist_ctx=ctx))
    return train_and_report(ctx, say, lambda: fit_diffusion(
        chosen.images, chosen.masks, data.train_good.images, args.defect, out, config=config, steps=args.steps,
        seed=args.seed, device=str(ctx.device), resume=args.resume, progress=not args.quiet, extra=extra,
        dist_ctx=ctx))
