"""What every learned generator's `gan fit-...` command shares: the training and partition flags (one meaning
each), torchrun's process group, the partition's base set, the refusal to train silently over an earlier
training, and a diverged run's one-line end. Each generator package's cli module builds its commands from these;
`inspect-train gan` (inspect_train.commands.gan) lists them.

Under `torchrun --nproc_per_node N -m inspect_train gan ...` each process trains on its share of the config's
global batch (or the same small training, where the generator has no global batch), gradients are averaged, only
rank 0 prints and writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from generators.base import TrainingDiverged
from inspect_train.data.category import load_category
from inspect_train.data.mvtec import scan_category
from inspect_train.distributed import init_distributed, shutdown
from inspect_train.errors import InputError
from inspect_train.output_paths import check_output_folder, make_folder
from inspect_train.protocol import get_partition, manifest_for_run
from inspect_train.validators import add_threads_flag, positive_int, whole_number


def add_training_flags(p, config_default: str | None, sizes: str) -> None:
    """The flags of every `gan fit-...` command, with one meaning each."""
    p.add_argument("--config", default=config_default, help=f"config name under configs/ ({sizes}) or a YAML path")
    p.add_argument("--steps", type=whole_number, default=None, help="training steps (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (checkpoint, tb/ logs)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start over, replacing the checkpoint a stopped or finished training left in --out")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_flag(p)


def add_partition_flags(p) -> None:
    """The flags naming one defect type's base set in one partition (fit a generator on it alone)."""
    p.add_argument("--data", required=True, help="dataset root in MVTec AD layout")
    p.add_argument("--category", required=True)
    p.add_argument("--defect", required=True, help="defect type (folder name under test/)")
    p.add_argument("--manifest", default=None, help="few-shot split manifest; made (seeded) in --out if omitted")
    p.add_argument("--partitions", type=positive_int, default=3, help="partitions when making a manifest (default 3)")
    p.add_argument("--split-seed", type=int, default=0, help="seed when making a manifest (default 0)")
    p.add_argument("--partition", type=positive_int, required=True, help="partition number K: train on its base set only")


def join_processes(device: str | None, threads: int | None = None):
    """Join torchrun's process group if there is one; this rank's context (device cuda:LOCAL_RANK on a GPU node)."""
    if threads is not None:
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
    or made here, kept in --out once training starts), the RunManifest and the output folder: all a trainer may
    see of that type. Writes nothing."""
    out = check_output_folder(args.out)
    index = scan_category(args.data, args.category)
    if args.defect not in index.defects:
        raise InputError(f"{index.folder / 'test'}: no defect type '{args.defect}' "
                         f"(have: {', '.join(index.defect_types)})")
    manifest = manifest_for_run(index, args.manifest, out, args.partitions, args.split_seed)
    part = get_partition(manifest.manifest, args.partition)
    if args.defect not in part["defects"]:
        raise InputError(f"{manifest.path}: partition {args.partition} has no split for '{args.defect}'")
    base = part["defects"][args.defect]["base"]
    data = load_category(args.data, args.category, size=size, index=index)
    return data, base, manifest, out


def check_restart(checkpoint: Path, args) -> None:
    """A training already in --out is continued (--resume) or replaced (--overwrite), never silently."""
    if args.resume and args.overwrite:
        raise InputError("--resume continues the training in --out and --overwrite replaces it: give one")
    if checkpoint.exists() and not (args.resume or args.overwrite):
        raise InputError(f"{checkpoint} holds a stopped or finished training: add --resume to continue it, or "
                         "--overwrite to start over")


def start_writing(ctx, out: Path, manifest=None) -> None:
    """Every input is checked: rank 0 creates --out and keeps the manifest made for this training."""
    if ctx.is_main:
        make_folder(out)
        if manifest is not None:
            manifest.keep()

