"""`inspect-train evaluate-gen`: judge defect generators against a partition's real base set, offline, in minutes.

For each defect type and generator: mask statistics and their distance to the real masks, a real-vs-generated
two-sample classifier, diversity on a fixed random network, a contact sheet (real base defects, then each
generator's samples, with mask outlines); KID and clustered LPIPS as well when their pretrained weights are
on the machine. The real side is the partition's base set only, all a generator may see (the protocol):
the test images are never read. Generators: any registered one, the classic ones built from that base set, the
learned ones from a generators folder that classify/segment wrote (or explicit checkpoints), and folders written
by `generate`. The sources and the scoring live in inspect_train.genmetrics; this module is the command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from generators.registry import generator_names, learned_specs
from inspect_train.commands import COMMANDS
from inspect_train.commands._task_flags import add_generator_flags
from inspect_train.data.images import parse_resolution
from inspect_train.data.mvtec import scan_category
from inspect_train.errors import InputError
from inspect_train.genmetrics.contact_sheet import contact_sheet
from inspect_train.genmetrics.evaluate import metric_networks
from inspect_train.genmetrics.generator_sources import GeneratorSources, folder_size, folder_source
from inspect_train.genmetrics.random_features import SEED, WIDTHS, RandomConvFeatures
from inspect_train.genmetrics.record import log_tensorboard, markdown_table, write_outputs
from inspect_train.genmetrics.scoring import score_defect
from inspect_train.genmetrics.split import Split, base_only_data
from inspect_train.output_paths import check_output_folder, make_folder
from inspect_train.tasks.common import choose_device
from inspect_train.validators import (add_threads_flag, at_least_two, no_cap_or_at_least_two,
                                      positive_int)

LPIPS_NETS = ("alex", "squeeze", "vgg")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-gen",
        help=COMMANDS["evaluate-gen"][1],
        description="Score defect generators against the real base set of one partition (never its test images): "
        "mask statistics (area, pieces, border, elongation, angle, placement) and their distance to the real "
        "ones, the held-out accuracy of a classifier telling real from generated (0.5 = indistinguishable), "
        "diversity on a fixed random network, and a contact sheet per defect type. KID and clustered LPIPS "
        "are added when their pretrained weights are found (never downloaded).",
    )
    p.add_argument("--aug", nargs="+", metavar="A", default=[],
                   help=f"generators to score ({', '.join(generator_names())}); the classic ones are built from the "
                   "partition's base set, the learned ones (" + ", ".join(s.name for s in learned_specs()) +
                   ") need --generators or --checkpoint")
    p.add_argument("--data", metavar="DIR", required=True, help="dataset root in MVTec AD layout")
    p.add_argument("--category", required=True, help="category folder under --data")
    p.add_argument("--partition", metavar="K", type=int, required=True,
                   help="partition K of the manifest: its base set is the real side (and what the generators saw)")
    p.add_argument("--manifest", metavar="PATH", default=None,
                   help="few-shot split manifest (the one the generators were trained with; default: made like "
                   "`data split` and kept in --out)")
    p.add_argument("--partitions", metavar="N", type=int, default=3, help="without --manifest: partitions of that split (default 3)")
    p.add_argument("--split-seed", metavar="S", type=int, default=0, help="without --manifest: seed of that split (default 0)")
    p.add_argument("--generators", metavar="DIR", default=None,
                   help="learned generators: the generators folder a classify/segment run wrote (OUT/generators, "
                   "with an index.json per generator)")
    p.add_argument("--checkpoint", metavar="DEFECT=PATH", nargs="+", action="extend", default=[],
                   help="learned generators: a checkpoint for a defect type (wins over --generators for that type); "
                   "each file goes to the generator that wrote it, so with two learned generators in --aug give "
                   "one of each for a type to replace both")
    p.add_argument("--images", metavar="DIR", default=None,
                   help="also score a folder of generated images and masks (as `generate` writes: index.csv, "
                   "images/, masks/)")
    p.add_argument("--glob", metavar="PATTERN", default=None, help="--images: pick the images with this pattern")
    p.add_argument("--defect", metavar="T", nargs="+", default=None, help="defect types (default: all of the partition)")
    p.add_argument("--n", metavar="N", type=at_least_two, default=256, help="samples per defect type and generator (default 256)")
    p.add_argument("--resolution", default=None,
                   help="compare at N or HxW (default: the first learned generator's own resolution when one is "
                   "scored, else the --images size, else the data's own size)")
    p.add_argument("--folds", metavar="K", type=at_least_two, default=5, help="two-sample test: folds (default 5, fewer when the base set is small)")
    p.add_argument("--repeats", metavar="R", type=positive_int, default=5, help="two-sample test: draws of generated samples (default 5)")
    add_generator_flags(p, "evaluate-gen")
    p.add_argument("--seed", metavar="S", type=int, default=0, help="seed for sampling and the two-sample folds (default 0)")
    p.add_argument("--batch", metavar="N", type=positive_int, default=32, help="samples per forward pass (default 32)")
    p.add_argument("--device", metavar="DEVICE", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    add_threads_flag(p)
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default runs/evaluate-gen-<time>)")
    kid = p.add_argument_group("KID and clustered LPIPS (only when their weights are found or given)")
    kid.add_argument("--inception-weights", metavar="PATH", default=None,
                     help="torch-fidelity Inception-v3 weights (default: hub cache file weights-inception-2015-12-05-6726825d.pth)")
    kid.add_argument("--lpips-backbone-weights", metavar="PATH", default=None,
                     help="torchvision ImageNet weights of the LPIPS backbone (default: hub cache, e.g. alexnet-owt-7be5be79.pth)")
    kid.add_argument("--lpips-lin-weights", metavar="PATH", default=None, help="LPIPS v0.1 linear-layer weights (default: the lpips package's)")
    kid.add_argument("--lpips-net", choices=LPIPS_NETS, default="alex", help="LPIPS backbone (default alex)")
    kid.add_argument("--kid-subsets", metavar="N", type=positive_int, default=100, help="KID subsets to average (default 100)")
    kid.add_argument("--kid-subset-size", metavar="N", type=at_least_two, default=1000, help="largest KID subset (default 1000)")
    kid.add_argument("--max-per-cluster", metavar="N", type=no_cap_or_at_least_two, default=200,
                     help="LPIPS: at most this many members per cluster (0 = no cap; default 200)")
    kid.add_argument("--random-features", action="store_true",
                     help="TEST ONLY: KID/LPIPS on randomly initialised networks; their numbers mean nothing")
    p.add_argument("--generated", default=None, help=argparse.SUPPRESS)  # the old flag: one clear line
    p.set_defaults(func=run)


def check_args(args) -> None:
    if args.generated is not None:
        raise InputError("--generated is gone: use --images DIR for a folder, --aug NAME --checkpoint DEFECT=PATH "
                         "for a learned generator's checkpoint, or --aug crop-paste ... for a classic generator")
    unknown = [a for a in args.aug if a not in generator_names()]
    if unknown:
        raise InputError(f"--aug {unknown[0]}: not a generator (choose from {', '.join(generator_names())})")
    if not args.aug and not args.images:
        raise InputError("nothing to score: give --aug A [A ...] and/or --images DIR")
    learned = [s.name for s in learned_specs()]
    if args.checkpoint and not set(learned) & set(args.aug):
        raise InputError(f"--checkpoint is for a learned generator in --aug ({', '.join(learned)})")


def default_out() -> Path:
    return Path("runs") / f"evaluate-gen-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run(args) -> int:
    evaluate_generators(args)
    return 0


def evaluate_generators(args) -> tuple[Path, dict]:
    """Score every source on every defect type; (the output folder, the results as results.json holds them)."""
    check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.time()
    device = choose_device(args.device)
    out_dir = check_output_folder(args.out if args.out else default_out())
    warnings: list[str] = []
    index = scan_category(args.data, args.category)
    split = Split(args, index, out_dir)

    generators = GeneratorSources(args, index, split)
    size = parse_resolution(args.resolution) or generators.default_size()
    if size is None and args.images:
        size = folder_size(args, split)
    data = base_only_data(index, split, size)
    size, channels = tuple(data.size), data.channels
    sources = generators.build(data, size, channels, device, args.seed, args.batch)
    if args.images:
        sources.append(folder_source(args, split, size, channels, warnings))

    inception, embedder, kid_note = metric_networks(
        inception_weights=args.inception_weights, lpips_backbone_weights=args.lpips_backbone_weights,
        lpips_lin_weights=args.lpips_lin_weights, lpips_net=args.lpips_net, random_features=args.random_features,
        size=size, seed=args.seed, device=device, batch=args.batch)
    if kid_note:
        print(f"note: {kid_note}")
    make_folder(out_dir)
    split.save()
    print(f"evaluate-gen: {args.category} P{split.partition}, {len(split.defects)} defect type(s) at {size[0]}x{size[1]}, "
          f"{args.n} samples per generator; real side = base set only -> {out_dir}")

    extractor = RandomConvFeatures(channels, device=device, batch=args.batch)
    defects_out, sheets = {}, {}
    for defect in split.defects:
        real = data.defects[defect]
        rows, blocks = score_defect(defect, real, sources, extractor, (inception, embedder), args,
                                    real_label=f"real base set ({len(real)} images, partition {split.partition})")
        sheet_name = f"sheet_{defect}.png"
        sheets[defect] = contact_sheet(blocks, f"{args.category} / {defect}: real base set vs generators "
                                       "(red: mask outline)", out_dir / sheet_name)
        defects_out[defect] = {"base_images": real.names, "rows": rows, "sheet": sheet_name}

    results = {
        "task": "evaluate-gen",
        "version": 2,
        "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": round(time.time() - started, 2),
        "data": str(Path(args.data).expanduser().resolve()),
        "category": args.category,
        "partition": split.partition,
        "manifest": str(split.path),
        "real_set": "base: the partition's base images of each defect type (the test images are never read)",
        "resolution": list(size),
        "channels": channels,
        "n": args.n,
        "seed": args.seed,
        "device": str(device),
        "sources": [{"name": s.name, **s.record} for s in sources],
        "features": {"network": "random conv net, image + mask channel, mean and std of each ReLU layer",
                     "seed": SEED, "widths": list(WIDTHS)},
        "two_sample": {"folds": args.folds, "repeats": args.repeats},
        "kid_lpips": {"computed": inception is not None or embedder is not None, "why": kid_note,
                      "random_features": bool(args.random_features)},
        "defects": defects_out,
        "warnings": warnings,
        "arguments": {k: v for k, v in vars(args).items() if k != "func"},
    }
    write_outputs(out_dir, results)
    log_tensorboard(out_dir, results, sheets)
    for line in warnings:
        print(f"inspect-train: warning: {line}", file=sys.stderr)
    for defect, entry in defects_out.items():
        print(f"\n{defect} (base set: {len(entry['base_images'])} images)")
        print(markdown_table(entry, results["kid_lpips"]["computed"]), end="")
    print(f"\nwrote {out_dir / 'results.json'}, {out_dir / 'report.md'}, sheets and {out_dir / 'tb'} "
          f"in {results['wall_s']:.1f} s")
    return out_dir, results
