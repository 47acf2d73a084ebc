"""The painter's `gan` subcommand: fit-inpaint trains one defect type's painter on a partition's base set and
train/good (the same small training on every rank under torchrun; rank 0 writes)."""

from __future__ import annotations

from generators.inpaint.api import LOSSES, fit_inpaint, load_config
from generators.inpaint.train import painter_file
from generators.training_cli import (add_partition_flags, add_training_flags, check_restart,
                                     join_processes, partition_base_set, start_writing, train_and_report)
from inspect_train.errors import InputError
from inspect_train.output_paths import portable_path


def add_commands(sub) -> None:
    fi = sub.add_parser("fit-inpaint", help="a defect painter: one defect type, painted into masks on real good "
                                             "images, trained on a partition's base set and train/good")
    add_partition_flags(fi)
    fi.add_argument("--loss", choices=LOSSES, default=None,
                    help="nsgan: non-saturating logistic + R1 (as DFMGAN); r3gan: relativistic pairing + R1 + R2 "
                         "(default: the config's)")
    add_training_flags(fi, "inpaint-128", "inpaint-{tiny, 64, 128}")
    fi.set_defaults(func=run_fit_inpaint)


def run_fit_inpaint(args) -> int:
    config = load_config(args.config)
    res = int(config["resolution"])
    data, base, manifest, out = partition_base_set(args, (res, res))
    if len(data.train_good) == 0:
        raise InputError(f"{data.index.folder / 'train' / 'good'}: no images")
    check_restart(out / painter_file(args.defect), args)
    chosen = data.defects[args.defect].select(base)
    manifest_path = manifest.path
    extra = {"category": args.category, "manifest": portable_path(manifest_path, out),
             "partition": int(args.partition), "base": list(base)}
    ctx = join_processes(args.device, args.threads)
    start_writing(ctx, out, manifest)
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"inpaint: defect '{args.defect}', partition {args.partition}: {len(base)} base image(s) and "
        f"{len(data.train_good)} train/good at {res}x{res}, config {config['name']}, "
        f"loss {args.loss or config['train'].get('loss', 'nsgan')} (manifest {manifest_path})")
    return train_and_report(ctx, say, lambda: fit_inpaint(
        chosen.images, chosen.masks, data.train_good.images, args.defect, out, config=config, steps=args.steps,
        loss=args.loss, seed=args.seed, device=str(ctx.device), resume=args.resume, progress=not args.quiet,
        extra=extra, dist_ctx=ctx))
