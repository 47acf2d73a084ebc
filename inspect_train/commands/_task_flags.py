"""The flags every training task takes (classify, segment, detect), with one meaning each.

Each task command adds its own few flags after these. Values left at None fall back to the task's preset
(see inspect_train.settings), so a flag the user did not give never overrides a preset.
"""

from __future__ import annotations

from generators.registry import AUGS

DEFAULT_AUG = "crop-paste"


def add_task_arguments(p, task: str, toy_preset: str, data_preset: str, model_help: str) -> None:
    p.add_argument("--data", help="dataset root in MVTec AD layout (omit to use the built-in toy dataset)")
    p.add_argument("--category", help="category folder under --data (required with --data)")
    p.add_argument("--aug", nargs="+", choices=AUGS, default=[DEFAULT_AUG], metavar="AUG",
                   help="arms to train next to the real-only baseline, one or more of: " + ", ".join(AUGS) +
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
    p.add_argument("--generators", help="--aug dfmgan: folder of DFMGAN generators to reuse and add missing ones "
                                        "to (default OUT/generators)")
    p.add_argument("--gan-config", help="--aug dfmgan: DFMGAN config (default: the preset's gan_config)")
    p.add_argument("--backbone-steps", type=int, help="--aug dfmgan: stage-1 steps when the backbone is trained here "
                                                      "(default: the preset's gan_backbone_steps, else the DFMGAN config's)")
    p.add_argument("--defect-steps", type=int, help="--aug dfmgan: stage-2 steps per defect type and partition")
    p.add_argument("--inpaint-config", help="--aug inpaint: painter config, a name in configs/ or a path (default: "
                                            "the preset's inpaint_config, else inpaint-tiny up to 32 px, inpaint-64 "
                                            "up to 64, inpaint-128 above); a smaller one reuses painters trained for "
                                            "a smaller task")
    p.add_argument("--inpaint-steps", type=int, help="--aug inpaint: training steps of each painter (per defect type "
                                                     "and partition) when it is trained here (default: the inpaint "
                                                     "config's)")
    p.add_argument("--inpaint-loss", choices=("nsgan", "r3gan"),
                   help="--aug inpaint: the painters' adversarial loss when they are trained here (default: the "
                        "inpaint config's)")
    p.add_argument("--mask-source", metavar="SOURCE",
                   help="--aug inpaint: where each painted defect goes: base (fresh deformed masks of the "
                        "partition's base images; the default), dfmgan (masks drawn by DFMGAN stage-2 generators, "
                        "trained when missing) or a folder of mask PNGs you drew")
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
