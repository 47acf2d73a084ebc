"""`inspect-train segment`: train a defect segmenter (U-Net, DeepLabV3, DRAEM) with in-loop synthetic defects."""

from __future__ import annotations

from pathlib import Path

from inspect_train.commands._cmdline import command_line
from inspect_train.errors import InputError


# The choices, kept here so that building the CLI does not import torch, smp and sklearn
# (tests check they match inspect_train.tasks.segment.AUGS and inspect_train.models.segmenters.MODELS).
AUGS = ("none", "crop-paste", "cut-paste", "perlin", "dfmgan")
MODELS = ("unet", "deeplabv3", "draem")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="train a defect segmenter with in-loop synthetic defects",
        description="Per partition: train on the base set's real defects, train/good and fresh synthetic defects "
        "every batch, and the real-only baseline with the same model, schedule and seed; evaluate both on the "
        "partition's test set (pixel AP/AUROC, AUPRO@30%%FPR, image AUROC/AP, pixel F1 max). "
        "Without --data it runs on the built-in toy dataset with the tiny preset.",
    )
    p.add_argument("--data", type=Path, help="MVTec-AD-style root folder (omit for the toy dataset)")
    p.add_argument("--category", help="category folder under --data")
    p.add_argument("--aug", choices=AUGS, default="perlin", help="synthetic defect source (default: perlin)")
    p.add_argument("--model", choices=MODELS, default="unet", help="segmenter (default: unet)")
    p.add_argument("--encoder", help="smp encoder for unet/deeplabv3 (default from the config: resnet18)")
    p.add_argument("--weights", help="encoder weights: a state-dict file, or 'imagenet' from the local cache "
                   "(default: random init)")
    p.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 3], help="partitions to run (default: 1 2 3)")
    p.add_argument("--manifest", help="manifest.json to use (default: made from --seed and kept in --out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder (results.json, report.md, tb/)")
    p.add_argument("--config", help="segment preset name or YAML path (default: segment-tiny without --data, "
                   "segment-256 with it)")
    p.add_argument("--resolution", help="N or HxW (height x width) to resize every image to")
    p.add_argument("--steps", type=int, help="optimiser steps per arm (fixed schedule)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--synthetic-ratio", type=float, help="fraction of each batch that is synthetic (augmented arm)")
    p.add_argument("--lr", type=float)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: the config's cpu_threads, else torch's)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the real-only baseline arm")
    p.add_argument("--generators", type=Path, help="--aug dfmgan: folder of DFMGAN generators to reuse or train "
                   "into (default: <out>/generators)")
    p.add_argument("--gan-config", help="--aug dfmgan: DFMGAN config (default: the preset's, e.g. dfmgan-256)")
    p.add_argument("--backbone-steps", type=int, help="--aug dfmgan: stage-1 steps when the backbone is trained here "
                                                      "(default: the preset's gan_backbone_steps, else the DFMGAN config's)")
    p.add_argument("--defect-steps", type=int, help="--aug dfmgan: stage-2 steps per defect type and partition")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def build_job(args):
    from inspect_train.tasks.segment import SegmentJob, load_segment_config

    config = load_segment_config(args.config or ("segment-256" if args.data else "segment-tiny"))
    overrides = {"resolution": args.resolution, "steps": args.steps, "batch_size": args.batch_size,
                 "synthetic_ratio": args.synthetic_ratio, "lr": args.lr, "cpu_threads": args.threads}
    config.update({k: v for k, v in overrides.items() if v is not None})
    if args.data is not None and not args.category:
        raise InputError("--category is needed with --data")
    return SegmentJob(
        out=args.out,
        aug=args.aug,
        model=args.model,
        data=args.data,
        category=args.category,
        config=config,
        encoder=args.encoder,
        weights=args.weights,
        partitions=sorted(set(args.partitions)),
        manifest=args.manifest,
        seed=args.seed,
        device=args.device,
        baseline=args.baseline,
        generators_dir=args.generators,
        gan_config=args.gan_config,
        backbone_steps=args.backbone_steps,
        defect_steps=args.defect_steps,
        command=command_line("segment", args, negated={"baseline": "--no-baseline"}),
        progress=not args.quiet,
    )


def run(args) -> int:
    from inspect_train.report import REPORT_NAME
    from inspect_train.tasks.segment import run_segment

    job = build_job(args)
    results = run_segment(job)
    if results is None:
        return 0  # a torchrun rank other than 0: rank 0 reports and writes
    summary = results["summary"]
    for arm in ("baseline", "augmented"):
        stats = summary.get(arm) or {}
        if stats:
            line = ", ".join(f"{k} {v['mean']:.3f}" for k, v in stats.items())
            print(f"{arm}: {line}")
    print(f"wrote {Path(job.out) / 'results.json'} and {Path(job.out) / REPORT_NAME}")
    return 0
