"""DFMGAN's `gan` subcommands: fit-backbone (stage 1), fit-defect (stage 2) and describe (parameter counts).

DFMGAN trains at the config's resolution: N (square) or HxW (`fit-backbone --resolution 192x64` for a long part;
the short side is the level the channel widths refer to); stage 2 takes the backbone's.
"""

from __future__ import annotations

import json
from pathlib import Path

from generators.dfmgan.api import fit_backbone, fit_defect, load_config
from generators.dfmgan.checkpoint import load_checkpoint
from generators.dfmgan.config import resolution_hw, with_resolution
from generators.dfmgan.describe import describe
from generators.dfmgan.train_backbone import BACKBONE_FILE
from generators.dfmgan.train_defect import defect_file
from generators.training_cli import (add_partition_flags, add_training_flags, check_restart,
                                     join_processes, partition_base_set, start_writing, train_and_report)
from inspect_train.data.category import load_category
from inspect_train.data.images import parse_resolution
from inspect_train.errors import InputError
from inspect_train.output_paths import check_output_folder, portable_path

SIZES = "dfmgan-{tiny, 64, 128, 256}"


def add_commands(sub) -> None:
    fb = sub.add_parser("fit-backbone", help="DFMGAN stage 1: StyleGAN2 on train/good, square or HxW")
    fb.add_argument("--data", required=True, help="dataset root in MVTec AD layout")
    fb.add_argument("--category", required=True)
    fb.add_argument("--resolution", default=None,
                    help="training size, N (square) or HxW as in classify/segment, e.g. 192x64: the short side a "
                         "power of two, both sides multiples of a quarter of it (default: the config's)")
    add_training_flags(fb, "dfmgan-256", SIZES)
    fb.set_defaults(func=run_fit_backbone)

    fd = sub.add_parser("fit-defect", help="DFMGAN stage 2: one defect type on a partition's base set, backbone "
                                            "frozen (at the backbone's resolution)")
    fd.add_argument("--backbone", required=True, help="stage-1 checkpoint (backbone.pt)")
    add_partition_flags(fd)
    add_training_flags(fd, None, SIZES)
    fd.set_defaults(func=run_fit_defect)

    de = sub.add_parser("describe", help="parameter counts of a DFMGAN config's networks")
    de.add_argument("--config", default="dfmgan-256")
    de.add_argument("--channels", type=int, default=3, help="image channels (3 = RGB as in the paper; 1 = grey)")
    de.add_argument("--json", action="store_true", help="print JSON only")
    de.set_defaults(func=run_describe)


def run_fit_backbone(args) -> int:
    out = check_output_folder(args.out)
    config = load_config(args.config)
    size = parse_resolution(args.resolution)
    if size is not None and size != resolution_hw(config):
        config = with_resolution(config, size)
    size = resolution_hw(config)
    data = load_category(args.data, args.category, size=size)
    if len(data.train_good) == 0:
        raise InputError(f"{data.index.folder / 'train' / 'good'}: no images")
    config["category"] = args.category
    check_restart(out / BACKBONE_FILE, args)
    ctx = join_processes(args.device, args.threads)
    ctx.local_batch(int(config["stage1"]["batch"]))  # fails early, on every rank, if it does not divide
    start_writing(ctx, out)
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"stage 1: {len(data.train_good)} train/good images of '{args.category}' at {size[0]}x{size[1]}, "
        f"{data.channels} channel(s), config {config['name']}"
        + (f", {ctx.world_size} processes" if ctx.enabled else ""))
    return train_and_report(ctx, say, lambda: fit_backbone(
        data.train_good.images, config, out, steps=args.steps, seed=args.seed, device=str(ctx.device),
        resume=args.resume, progress=not args.quiet, dist_ctx=ctx))


def run_fit_defect(args) -> int:
    check_output_folder(args.out)
    backbone = load_checkpoint(args.backbone, kind="backbone")
    size = resolution_hw(backbone, args.backbone)
    trained_on = backbone["config"].get("category")
    if trained_on and trained_on != args.category:
        raise InputError(f"{args.backbone}: backbone was trained on category '{trained_on}', not '{args.category}'")
    data, base, manifest, out = partition_base_set(args, size)
    if data.channels != int(backbone["channels"]):
        raise InputError(f"{args.backbone}: backbone has {backbone['channels']} channel(s), "
                         f"'{args.category}' has {data.channels}")
    check_restart(out / defect_file(args.defect), args)
    chosen = data.defects[args.defect].select(base)
    config = load_config(args.config) if args.config else None
    manifest_path = manifest.path
    extra = {"category": args.category, "manifest": portable_path(manifest_path, out),
             "partition": int(args.partition), "base_images": list(base)}
    ctx = join_processes(args.device, args.threads)
    start_writing(ctx, out, manifest)
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"stage 2: defect '{args.defect}', partition {args.partition}: {len(base)} base image(s) at "
        f"{size[0]}x{size[1]} (manifest {manifest_path})" + (f", {ctx.world_size} processes" if ctx.enabled else ""))
    return train_and_report(ctx, say, lambda: fit_defect(
        Path(args.backbone), chosen.images, chosen.masks, args.defect, out, config=config, steps=args.steps,
        seed=args.seed, device=str(ctx.device), resume=args.resume, progress=not args.quiet, extra=extra,
        dist_ctx=ctx))


def run_describe(args) -> int:
    if args.channels not in (1, 3):
        raise InputError(f"--channels {args.channels}: must be 1 or 3")
    counts = describe(load_config(args.config), args.channels)
    if args.json:
        print(json.dumps(counts))
    else:
        for key, value in counts.items():
            print(f"{key:>18}: {value:>12,}" if isinstance(value, int) else f"{key:>18}: {value}")
    return 0
