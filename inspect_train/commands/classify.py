"""`inspect-train classify`: train a defect classifier with in-loop synthetic defects, next to the
real-only baseline, on each partition of the few-shot protocol."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path


from inspect_train.config_files import read_preset
from inspect_train.commands._cmdline import command_line
from inspect_train.errors import InputError

AUG_CHOICES = ("none", "classic", "crop-paste", "cut-paste", "perlin", "dfmgan")
TOY_PRESET, DATA_PRESET = "classify-toy", "classify-256"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "classify",
        help="train a defect classifier with in-loop synthetic defects",
        description="For each partition: train on the base set plus FRESH synthetic defects in every batch, and the "
        "real-only baseline with the same model, schedule and seed; evaluate both on the partition's test set. "
        "Without --data it writes the toy dataset into OUT/toy-data and uses the tiny preset.",
    )
    p.add_argument("--data", help="dataset root in MVTec AD layout (omit to use the built-in toy dataset)")
    p.add_argument("--category", help="category folder under --data (required with --data)")
    p.add_argument("--aug", required=True, choices=AUG_CHOICES,
                   help="none: real only; classic: flips/turns/colour jitter on real images; crop-paste, cut-paste, "
                        "perlin, dfmgan: fresh synthetic defects in every batch")
    p.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 3], metavar="K", help="partitions to run (default 1 2 3)")
    p.add_argument("--manifest", help="manifest.json to use (default: make one with --seed and keep it in --out)")
    p.add_argument("--config", help=f"YAML preset, a name in configs/ or a path (default {TOY_PRESET} without --data, "
                                    f"{DATA_PRESET} with it)")
    p.add_argument("--model", help="any timm model name (preset: resnet34 with data, resnet18 on the toy data)")
    p.add_argument("--weights", help="pretrained weights: a local file, or 'timm' for timm's local cache (default: random init)")
    sched = p.add_mutually_exclusive_group()
    sched.add_argument("--steps", type=int, help="optimiser steps per arm (the same for baseline and augmented)")
    sched.add_argument("--epochs", type=float,
                       help="alternatively, passes over the partition's real training images at --batch-size")
    p.add_argument("--batch-size", type=int, help="images per step, real + synthetic")
    p.add_argument("--synthetic-ratio", type=float,
                   help="R: the fraction of each batch that is fresh synthetic samples, round(R * batch) of them "
                        "(default 0.5, half of each batch; 0 = real only, 1 = synthetic only)")
    p.add_argument("--resolution", help="train/test resolution, N or HxW (preset: 256, toy 32)")
    p.add_argument("--with-good", action="store_true", help="add a 'good' class (train/good to train, test/good to test)")
    p.add_argument("--no-baseline", action="store_true", help="skip the real-only baseline arm")
    p.add_argument("--generators", help="DFMGAN folder to reuse (and add missing generators to); default OUT/generators")
    p.add_argument("--gan-config", help="DFMGAN config for --aug dfmgan (preset: dfmgan-256, toy dfmgan-tiny)")
    p.add_argument("--backbone-steps", type=int, help="--aug dfmgan: stage-1 steps when the backbone is trained here "
                                                      "(default: the preset's gan_backbone_steps, else the DFMGAN config's)")
    p.add_argument("--defect-steps", type=int, help="--aug dfmgan: stage-2 steps per defect type and partition")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the model init and every sample (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's; 1 is often fastest for small "
                                               "models on a busy CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", help="output folder (default runs/classify-<aug>-<timestamp>)")
    p.set_defaults(func=run)


def load_preset(name_or_path: str) -> dict:
    return read_preset(name_or_path, "classify")[0]


def settings_from(config: dict, args, where: str):
    from inspect_train.tasks.classify import ClassifySettings

    known = {f.name for f in dataclasses.fields(ClassifySettings)}
    extra = {"resolution", "gan_config", "gan_backbone_steps", "gan_defect_steps"}
    unknown = sorted(set(config) - known - extra)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}")
    values = {k: v for k, v in config.items() if k in known}
    overrides = {"model": args.model, "weights": args.weights, "steps": args.steps, "batch_size": args.batch_size,
                 "synthetic_ratio": args.synthetic_ratio}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if args.with_good:
        values["with_good"] = True
    if args.quiet:
        values["progress"] = False
    try:
        settings = ClassifySettings(**values)
    except TypeError as err:
        raise InputError(f"{where}: {err}") from None
    for key in ("steps", "batch_size"):
        if not isinstance(getattr(settings, key), int) or getattr(settings, key) < 1:
            raise InputError(f"--{key.replace('_', '-')} must be a positive integer (got {getattr(settings, key)})")
    if not 0.0 <= float(settings.synthetic_ratio) <= 1.0:
        raise InputError(f"--synthetic-ratio must be between 0 and 1 (got {settings.synthetic_ratio})")
    return settings


def run(args) -> int:
    """One process, or every rank under `torchrun --nproc_per_node N -m inspect_train classify ...`."""
    from inspect_train.distributed import shutdown
    from inspect_train.tasks.common import start_run

    ctx = start_run(args.device)
    try:
        return _run(args, ctx)
    finally:
        shutdown(ctx)


def _run(args, ctx) -> int:
    from inspect_train.data.category import load_category
    from inspect_train.data.images import parse_resolution
    from inspect_train.data.mvtec import scan_category
    from inspect_train.protocol import get_partition, manifest_for_run
    from inspect_train.report import write_results
    from inspect_train.tasks import classify as task
    from inspect_train.tasks.common import broadcast_object, main_first
    from inspect_train.tasks.generators import generator_factory, open_dfmgan_cache

    if args.data and not args.category:
        raise InputError("--data needs --category (a folder under the data root)")
    if args.category and not args.data:
        raise InputError("--category needs --data (without --data the toy dataset is used)")
    if any(k < 1 for k in args.partitions):
        raise InputError(f"--partitions must be numbers from 1 (got {args.partitions})")
    if args.epochs is not None and args.epochs <= 0:
        raise InputError(f"--epochs must be positive (got {args.epochs})")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be at least 1 (got {args.threads})")
        import torch

        torch.set_num_threads(args.threads)
    device = ctx.device
    from inspect_train.models import check_model_args
    say = print if ctx.is_main else (lambda *a, **k: None)
    out = Path(broadcast_object(ctx, args.out or f"runs/classify-{args.aug}-{time.strftime('%Y%m%d-%H%M%S')}"))
    preset_name = args.config or (DATA_PRESET if args.data else TOY_PRESET)
    config = load_preset(preset_name)
    settings = settings_from(config, args, preset_name)
    ctx.local_batch(settings.batch_size)  # fail early when the batch does not divide over the processes
    if not ctx.is_main:
        settings.progress = False
    size = parse_resolution(args.resolution or config.get("resolution"))
    check_model_args(settings.model, settings.weights)

    if args.data:
        data_root, category = Path(args.data), args.category
    else:
        from inspect_train.data.toy import write_toy_dataset

        data_root = Path(main_first(ctx, lambda: write_toy_dataset(out / "toy-data", seed=0), lambda: out / "toy-data"))
        category = "toy"
        say(f"no --data: using the toy dataset written to {data_root / category}")
    index = scan_category(data_root, category)
    out.mkdir(parents=True, exist_ok=True)
    manifest, manifest_path = main_first(
        ctx, lambda: manifest_for_run(index, args.manifest, out, max(args.partitions), args.seed),
        lambda: manifest_for_run(index, args.manifest or str(out / "manifest.json"), out, max(args.partitions), args.seed))
    for k in args.partitions:
        get_partition(manifest, k)
    data = load_category(data_root, category, size=size, index=index)
    task.class_names_for(index.defect_types, settings.with_good)  # fail early on a one-class problem

    first = get_partition(manifest, args.partitions[0])
    if args.epochs is not None:
        settings.steps = task.steps_for_epochs(args.epochs, data, first, settings)

    dfmgan = None
    if args.aug == "dfmgan":
        dfmgan = open_dfmgan_cache(
            data, config, Path(args.generators) if args.generators else out / "generators", seed=args.seed,
            device=device, manifest_path=manifest_path, gan_config=args.gan_config,
            backbone_steps=args.backbone_steps, defect_steps=args.defect_steps, progress=settings.progress,
            ctx=ctx, say=say)
    options = dict((settings.generator_options or {}).get(args.aug, {}))
    if args.aug == "dfmgan":
        options.setdefault("paired_good", False)  # a classifier never sees the paired good image
    make = generator_factory(args.aug, data, device, options, dfmgan)

    effective = {**config, **dataclasses.asdict(settings), "resolution": list(data.size), "device": str(device),
                 **({"processes": ctx.world_size} if ctx.enabled else {}), "seed": args.seed, "category": category, "data": str(data_root), "preset": preset_name,
                 "partitions": args.partitions, "cpu_threads": args.threads}
    if dfmgan is not None:
        effective["gan_config"] = dfmgan.config_name
    entries = []
    for k in args.partitions:
        say(f"P{k}: training {'baseline and ' if not args.no_baseline else ''}{args.aug} for {settings.steps} steps")
        entry = task.run_partition(data, manifest, k, args.aug, settings, args.seed, device, out, make,
                                   baseline=not args.no_baseline, ctx=ctx)
        entries.append(entry)
    if not ctx.is_main:
        return 0  # rank 0 evaluated and writes the results
    n_synthetic = round(settings.synthetic_ratio * settings.batch_size) if args.aug not in ("none", "classic") else 0
    schedule = {"steps": settings.steps, "batch_size": settings.batch_size, "synthetic_per_batch": n_synthetic,
                "real_per_batch": settings.batch_size - n_synthetic,
                "synthetic_samples_seen": entries[0].get("synthetic_samples_seen", 0)}
    results = write_results(out, "classify", args.aug, command_line("classify", args), effective, manifest_path, entries,
                            task.METRICS, extra={"schedule": schedule})
    summary = results["summary"]
    for metric in task.METRICS:
        parts = []
        for arm in ("baseline", "augmented"):
            stats = (summary.get(arm) or {}).get(metric)
            if stats:
                parts.append(f"{arm} {stats['mean']:.3f} ± {stats['std']:.3f}")
        diff = (summary.get("difference") or {}).get(metric)
        if diff is not None:
            parts.append(f"difference {diff:+.3f}")
        print(f"{metric}: " + ", ".join(parts))
    print(f"results: {out / 'results.json'}, {out / 'report.md'}; TensorBoard: tensorboard --logdir {out / 'tb'}")
    return 0
