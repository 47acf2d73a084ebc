"""The flags every training task takes (classify, segment, detect), with one meaning each.

Each task command adds its own few flags after these. Values left at None fall back to the task's preset
(see inspect_train.settings), so a flag the user did not give never overrides a preset.
"""

from __future__ import annotations

from generators.registry import aug_names, specs

DEFAULT_AUG = "crop-paste"


def add_generator_flags(p, command: str) -> None:
    """Each generator option that has a flag for `command`, as its spec declares it (default None: the preset's)."""
    for spec in specs():
        for option in spec.options:
            if option.flag and command in option.commands:
                p.add_argument(option.flag, dest=option.dest, type=option.type, choices=option.choices,
                               metavar=option.metavar, default=None, help=option.help)


def add_task_arguments(p, task: str, toy_preset: str, data_preset: str, model_help: str) -> None:
    augs = aug_names()
    p.add_argument("--data", help="dataset root in MVTec AD layout (omit to use the built-in toy dataset)")
    p.add_argument("--category", help="category folder under --data (required with --data)")
    p.add_argument("--aug", nargs="+", choices=augs, default=[DEFAULT_AUG], metavar="AUG",
                   help="arms to train next to the real-only baseline, one or more of: " + ", ".join(augs) +
                        f" (default {DEFAULT_AUG}). none: real only (the baseline itself); classic: flips, turns and "
                        "colour jitter on the real images; the others draw fresh synthetic defects every batch")
    p.add_argument("--no-baseline", action="store_true", help="skip the real-only baseline arm (none)")
    p.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 3], metavar="K",
                   help="partitions of the manifest to run (default 1 2 3)")
    p.add_argument("--manifest", help="manifest.json to use (default: make one with --seed and keep it in --out)")
    p.add_argument("--config", help=f"YAML preset: a name in configs/ or a path, e.g. a run's config.yaml (default "
                                    f"{toy_preset} without --data, {data_preset} with it)")
    p.add_argument("--model", help=model_help)
    p.add_argument("--weights", help="pretrained weights: a local file, or 'pretrained' for the library's local "
                                     "cache (timm / smp; never downloaded). Default: random init")
    sched = p.add_mutually_exclusive_group()
    sched.add_argument("--steps", type=int, help="optimiser steps per arm (the same for every arm)")
    sched.add_argument("--epochs", type=float,
                       help="alternatively, passes over the partition's real training images at --batch-size")
    p.add_argument("--batch-size", type=int, help="images per step, real + synthetic")
    p.add_argument("--synthetic-ratio", type=float,
                   help="R: the fraction of each batch that is fresh synthetic samples, round(R * batch) of them "
                        "(preset default 0.5)")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW, warm-up then cosine to zero)")
    p.add_argument("--resolution", help="train/test resolution, N or HxW (height x width)")
    p.add_argument("--generators", help="folder of learned generators to reuse and add missing ones to (default "
                                        "OUT/generators)")
    add_generator_flags(p, task)
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the model init and every sample (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: the preset's cpu_threads, else torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", help=f"output folder (default runs/{task}-<arms>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="read back the arms already finished in --out (each keeps P<k>/<arm>/finished.pt) instead of "
                        "training them again; they must have the same settings, data, split and seed. Resumes a "
                        "stopped run, or assembles one run from commands that each ran some --aug / --partitions "
                        "into the same --out")
