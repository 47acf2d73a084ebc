"""`inspect-train gan`: train a learned generator by hand. Each learned generator adds its own `gan fit-...`
subcommands (its spec's `add_commands`); this module holds what they share: the flags every training command
takes, the partition's base set, torchrun's process group and a diverged run's one-line end.

The training commands run under `torchrun --nproc_per_node N -m inspect_train gan ...`: each process trains on its
share of the config's global batch (or the same small training, where the generator has no global batch),
gradients are averaged, only rank 0 prints and writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from generators.base import TrainingDiverged
from generators.registry import learned_specs
from inspect_train.commands import COMMANDS
from inspect_train.data.category import load_category
from inspect_train.data.mvtec import scan_category
from inspect_train.distributed import init_distributed, shutdown
from inspect_train.errors import InputError
from inspect_train.protocol import get_partition, manifest_for_run


def register(subparsers) -> None:
    specs = learned_specs()
    gan = subparsers.add_parser("gan", help=COMMANDS["gan"][1], description="Train a learned generator by hand: "
                                + "; ".join(f"{s.name}: {s.summary}" for s in specs))
    sub = gan.add_subparsers(dest="gan_command", metavar="ACTION")
    sub.required = True
    for spec in specs:
        if spec.learned.add_commands:
            spec.learned.add_commands(sub)


def add_training_flags(p, config_default: str | None, sizes: str) -> None:
    """The flags of every `gan fit-...` command, with one meaning each."""
    p.add_argument("--config", default=config_default, help=f"config name under configs/ ({sizes}) or a YAML path")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (checkpoint, tb/ logs)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's); 1 is fastest for small configs on a busy CPU")


def add_partition_flags(p) -> None:
    """The flags naming one defect type's base set in one partition (fit a generator on it alone)."""
    p.add_argument("--data", required=True, help="dataset root in MVTec AD layout")
    p.add_argument("--category", required=True)
    p.add_argument("--defect", required=True, help="defect type (folder name under test/)")
    p.add_argument("--manifest", default=None, help="few-shot split manifest; made (seeded) in --out if omitted")
    p.add_argument("--partitions", type=int, default=3, help="partitions when making a manifest (default 3)")
    p.add_argument("--split-seed", type=int, default=0, help="seed when making a manifest (default 0)")
    p.add_argument("--partition", type=int, required=True, help="partition number K: train on its base set only")


def join_processes(device: str | None, threads: int | None = None):
    """Join torchrun's process group if there is one; this rank's context (device cuda:LOCAL_RANK on a GPU node)."""
    import torch

    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads {threads}: must be at least 1")
        torch.set_num_threads(threads)
    return init_distributed(device)


def train_and_report(ctx, say, train) -> int:
    """Run one training; a diverged run ends with one line and exit 1 (its last good checkpoint stays), and the
    process group is closed either way."""
    try:
        path = train()
    except TrainingDiverged as err:
        print(f"inspect-train: error: {err}", file=sys.stderr)
        return 1
    finally:
        shutdown(ctx)
    say(f"wrote {path}")
    return 0


def partition_base_set(args, size: tuple[int, int]):
    """The category at `size` (H, W), the base-set names of --defect in --partition (the split from --manifest,
    or made and kept in --out), the manifest's path and the output folder: all a trainer may see of that type."""
    index = scan_category(args.data, args.category)
    if args.defect not in index.defects:
        raise InputError(f"{index.folder / 'test'}: no defect type '{args.defect}' "
                         f"(have: {', '.join(index.defect_types)})")
    out = Path(args.out)
    manifest, manifest_path = manifest_for_run(index, args.manifest, out, args.partitions, args.split_seed)
    part = get_partition(manifest, args.partition)
    if args.defect not in part["defects"]:
        raise InputError(f"{manifest_path}: partition {args.partition} has no split for '{args.defect}'")
    base = part["defects"][args.defect]["base"]
    data = load_category(args.data, args.category, size=size, index=index)
    return data, base, manifest_path, out


def check_steps(steps) -> None:
    if steps is not None and steps < 0:
        raise InputError(f"--steps {steps}: must be 0 or more")
