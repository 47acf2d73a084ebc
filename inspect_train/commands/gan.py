"""`inspect-train gan`: DFMGAN training (fit-backbone, fit-defect), the inpaint painter (fit-inpaint) and
`describe` (parameter counts).

DFMGAN trains at the config's resolution: N (square) or HxW (`fit-backbone --resolution 192x64` for a long part;
the short side is the level the channel widths refer to); stage 2 takes the backbone's. Both DFMGAN training
commands run under `torchrun --nproc_per_node N -m inspect_train gan ...`: each
process trains on its share of the config's global batch, gradients are averaged, only rank 0
prints and writes. fit-inpaint runs the same small training on every rank, and rank 0 writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from inspect_train.errors import InputError


def _dist(name: str | None, threads: int | None = None):
    """Join torchrun's process group if there is one; this rank's device (cuda:LOCAL_RANK on a GPU node)."""
    import torch

    from inspect_train.distributed import init_distributed

    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads {threads}: must be at least 1")
        torch.set_num_threads(threads)
    return init_distributed(name)


def register(subparsers) -> None:
    gan = subparsers.add_parser("gan", help="DFMGAN: train the backbone and per-defect modules (square or HxW), "
                                             "describe a config; fit-inpaint: train a defect painter")
    sub = gan.add_subparsers(dest="gan_command", metavar="ACTION")
    sub.required = True

    def common(p, config_default, family="dfmgan"):
        sizes = "tiny, 64, 128" if family == "inpaint" else "tiny, 64, 128, 256"
        p.add_argument("--config", default=config_default,
                       help=f"config name under configs/ ({family}-{{{sizes}}}) or a YAML path")
        p.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", required=True, help="output folder (checkpoint, tb/ logs)")
        p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch (default: torch's); 1 is fastest for small configs on a busy CPU")

    fb = sub.add_parser("fit-backbone", help="stage 1: StyleGAN2 on train/good, square or HxW")
    fb.add_argument("--data", required=True, help="dataset root in MVTec AD layout")
    fb.add_argument("--category", required=True)
    fb.add_argument("--resolution", default=None,
                    help="training size, N (square) or HxW as in classify/segment, e.g. 192x64: the short side a "
                         "power of two, both sides multiples of a quarter of it (default: the config's)")
    common(fb, "dfmgan-256")
    fb.set_defaults(func=run_fit_backbone)

    fd = sub.add_parser("fit-defect", help="stage 2: one defect type on a partition's base set, backbone frozen "
                                            "(at the backbone's resolution)")
    fd.add_argument("--backbone", required=True, help="stage-1 checkpoint (backbone.pt)")
    fd.add_argument("--data", required=True)
    fd.add_argument("--category", required=True)
    fd.add_argument("--defect", required=True, help="defect type (folder name under test/)")
    fd.add_argument("--manifest", default=None, help="few-shot split manifest; made (seeded) in --out if omitted")
    fd.add_argument("--partitions", type=int, default=3, help="partitions when making a manifest (default 3)")
    fd.add_argument("--split-seed", type=int, default=0, help="seed when making a manifest (default 0)")
    fd.add_argument("--partition", type=int, required=True, help="partition number K: train on its base set only")
    common(fd, None)
    fd.set_defaults(func=run_fit_defect)

    fi = sub.add_parser("fit-inpaint", help="a defect painter: one defect type, painted into masks on real good "
                                             "images, trained on a partition's base set and train/good")
    fi.add_argument("--data", required=True, help="dataset root in MVTec AD layout")
    fi.add_argument("--category", required=True)
    fi.add_argument("--defect", required=True, help="defect type (folder name under test/)")
    fi.add_argument("--manifest", default=None, help="few-shot split manifest; made (seeded) in --out if omitted")
    fi.add_argument("--partitions", type=int, default=3, help="partitions when making a manifest (default 3)")
    fi.add_argument("--split-seed", type=int, default=0, help="seed when making a manifest (default 0)")
    fi.add_argument("--partition", type=int, required=True, help="partition number K: train on its base set only")
    fi.add_argument("--loss", choices=("nsgan", "r3gan"), default=None,
                    help="nsgan: non-saturating logistic + R1 (as DFMGAN); r3gan: relativistic pairing + R1 + R2 "
                         "(default: the config's)")
    common(fi, "inpaint-128", family="inpaint")
    fi.set_defaults(func=run_fit_inpaint)

    de = sub.add_parser("describe", help="parameter counts of a config's networks")
    de.add_argument("--config", default="dfmgan-256")
    de.add_argument("--channels", type=int, default=3, help="image channels (3 = RGB as in the paper; 1 = grey)")
    de.add_argument("--json", action="store_true", help="print JSON only")
    de.set_defaults(func=run_describe)


def _train_and_report(ctx, say, train) -> int:
    """Run one training stage; a diverged run ends with one line and exit 1 (its last good checkpoint
    stays), and the process group is closed either way."""
    from generators.dfmgan.checkpoint import TrainingDiverged
    from inspect_train.distributed import shutdown

    try:
        path = train()
    except TrainingDiverged as err:
        print(f"inspect-train: error: {err}", file=sys.stderr)
        return 1
    finally:
        shutdown(ctx)
    say(f"wrote {path}")
    return 0


def run_fit_backbone(args) -> int:
    from generators.dfmgan.api import fit_backbone, load_config
    from generators.dfmgan.config import resolution_hw, with_resolution
    from inspect_train.data.category import load_category
    from inspect_train.data.images import parse_resolution

    config = load_config(args.config)
    size = parse_resolution(args.resolution)
    if size is not None and size != resolution_hw(config):
        config = with_resolution(config, size)
    size = resolution_hw(config)
    data = load_category(args.data, args.category, size=size)
    if len(data.train_good) == 0:
        raise InputError(f"{data.index.folder / 'train' / 'good'}: no images")
    _positive_steps(args.steps)
    config["category"] = args.category
    ctx = _dist(args.device, args.threads)
    ctx.local_batch(int(config["stage1"]["batch"]))  # fails early, on every rank, if it does not divide
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"stage 1: {len(data.train_good)} train/good images of '{args.category}' at {size[0]}x{size[1]}, "
        f"{data.channels} channel(s), config {config['name']}"
        + (f", {ctx.world_size} processes" if ctx.enabled else ""))
    return _train_and_report(ctx, say, lambda: fit_backbone(
        data.train_good.images, config, Path(args.out), steps=args.steps, seed=args.seed, device=str(ctx.device),
        resume=args.resume, progress=not args.quiet, dist_ctx=ctx))


def run_fit_defect(args) -> int:
    from generators.dfmgan.api import fit_defect, load_config
    from generators.dfmgan.checkpoint import load_checkpoint
    from generators.dfmgan.config import resolution_hw

    _positive_steps(args.steps)
    backbone = load_checkpoint(args.backbone, kind="backbone")
    size = resolution_hw(backbone, args.backbone)
    trained_on = backbone["config"].get("category")
    if trained_on and trained_on != args.category:
        raise InputError(f"{args.backbone}: backbone was trained on category '{trained_on}', not '{args.category}'")
    data, base, manifest_path, out = _partition_base_set(args, size)
    if data.channels != int(backbone["channels"]):
        raise InputError(f"{args.backbone}: backbone has {backbone['channels']} channel(s), "
                         f"'{args.category}' has {data.channels}")
    chosen = data.defects[args.defect].select(base)
    config = load_config(args.config) if args.config else None
    extra = {"category": args.category, "manifest": str(manifest_path), "partition": int(args.partition),
             "base_images": list(base)}
    ctx = _dist(args.device, args.threads)
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"stage 2: defect '{args.defect}', partition {args.partition}: {len(base)} base image(s) at "
        f"{size[0]}x{size[1]} (manifest {manifest_path})" + (f", {ctx.world_size} processes" if ctx.enabled else ""))
    return _train_and_report(ctx, say, lambda: fit_defect(
        Path(args.backbone), chosen.images, chosen.masks, args.defect, out, config=config, steps=args.steps,
        seed=args.seed, device=str(ctx.device), resume=args.resume, progress=not args.quiet, extra=extra,
        dist_ctx=ctx))


def _partition_base_set(args, size: tuple[int, int]):
    """The category at `size` (H, W), the base-set names of --defect in --partition (the split from
    --manifest, or made and kept in --out), the manifest's path and the output folder: all a stage-2 or painter
    trainer may see of that defect type."""
    from inspect_train.data.category import load_category
    from inspect_train.data.mvtec import scan_category
    from inspect_train.protocol import get_partition, manifest_for_run

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


def run_fit_inpaint(args) -> int:
    from generators.inpaint.api import fit_inpaint, load_config

    _positive_steps(args.steps)
    config = load_config(args.config)
    res = int(config["resolution"])
    data, base, manifest_path, out = _partition_base_set(args, (res, res))
    if len(data.train_good) == 0:
        raise InputError(f"{data.index.folder / 'train' / 'good'}: no images")
    chosen = data.defects[args.defect].select(base)
    extra = {"category": args.category, "manifest": str(manifest_path), "partition": int(args.partition),
             "base": list(base)}
    ctx = _dist(args.device, args.threads)
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"inpaint: defect '{args.defect}', partition {args.partition}: {len(base)} base image(s) and "
        f"{len(data.train_good)} train/good at {res}x{res}, config {config['name']}, "
        f"loss {args.loss or config['train'].get('loss', 'nsgan')} (manifest {manifest_path})")
    return _train_and_report(ctx, say, lambda: fit_inpaint(
        chosen.images, chosen.masks, data.train_good.images, args.defect, out, config=config, steps=args.steps,
        loss=args.loss, seed=args.seed, device=str(ctx.device), resume=args.resume, progress=not args.quiet,
        extra=extra, dist_ctx=ctx))


def run_describe(args) -> int:
    from generators.dfmgan.api import load_config
    from generators.dfmgan.describe import describe

    if args.channels not in (1, 3):
        raise InputError(f"--channels {args.channels}: must be 1 or 3")
    counts = describe(load_config(args.config), args.channels)
    if args.json:
        print(json.dumps(counts))
    else:
        for key, value in counts.items():
            print(f"{key:>18}: {value:>12,}" if isinstance(value, int) else f"{key:>18}: {value}")
    return 0


def _positive_steps(steps) -> None:
    if steps is not None and steps < 0:
        raise InputError(f"--steps {steps}: must be 0 or more")
