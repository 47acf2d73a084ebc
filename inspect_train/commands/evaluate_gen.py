"""`inspect-train evaluate-gen`: KID and clustered LPIPS of generated defects, as in the DFMGAN paper.

KID x 1e3 (lower is better: realism and coverage) between generated defect images
and the real images of that defect type; clustered LPIPS (higher is better:
diversity that memorising the training images cannot fake). Works on a folder of
images from any generator, or samples on the fly from a DFMGAN stage-2 checkpoint
or a classic generator (crop-paste, cut-paste, perlin) built from a partition's base set.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from inspect_train.data.images import load_image_set, parse_resolution
from inspect_train.data.mvtec import scan_category
from inspect_train.errors import InputError

# The metric networks pull in torch-fidelity, lpips and torchvision models (seconds to import): they are
# imported when the command runs, not whenever the CLI builds its parser.
LPIPS_NETS = ("alex", "squeeze", "vgg")
from inspect_train.protocol import get_partition, manifest_for_run
from inspect_train.tasks.common import choose_device
from inspect_train.genmetrics.sources import folder_channels, generated_image_paths, iter_folder, iter_generator

REAL_SET_HELP = (
    "which real images of the defect type to compare with: 'all' (the paper's choice), or with --partition K "
    "that partition's 'test' part (never seen by its generator; the default when a partition is known) or "
    "'base' part (what the generator trained on: low KID there can mean memorising)"
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-gen",
        help="KID and clustered LPIPS of generated defects (DFMGAN paper metrics)",
        description="Score generated defect images against the real images of one defect type: KID x 1e3 on "
        "Inception-v3 pool features (lower = closer to real) and clustered LPIPS (higher = more diverse). "
        "Weights are never downloaded: they are read from the torch hub cache "
        "($TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/checkpoints) or the paths given.",
    )
    p.add_argument("--generated", required=True, metavar="SOURCE",
                   help="folder of generated defect images (any generator; picks images by index.csv/index.json, "
                   "--glob, or every image except *_mask/*_good), a DFMGAN stage-2 checkpoint to sample from, or "
                   "crop-paste|cut-paste|perlin to sample that classic generator built from --partition's base set")
    p.add_argument("--data", metavar="DIR", required=True, help="dataset root in MVTec AD layout")
    p.add_argument("--category", required=True, help="category folder under --data")
    p.add_argument("--defect", required=True, help="defect type (folder under <category>/test)")
    p.add_argument("--manifest", metavar="PATH", default=None, help="few-shot split manifest (as the generator was trained with)")
    p.add_argument("--partition", metavar="K", type=int, default=None,
                   help="partition K of the manifest (default: the one a DFMGAN checkpoint, or the generate.json of a folder, records)")
    p.add_argument("--partitions", metavar="N", type=int, default=3, help="without --manifest: partitions of the split made like `data split` (default 3)")
    p.add_argument("--split-seed", metavar="S", type=int, default=0, help="without --manifest: seed of that split (default 0)")
    p.add_argument("--real-set", choices=("all", "base", "test"), default=None, help=REAL_SET_HELP)
    p.add_argument("--n-kid", metavar="N", type=int, default=5000, help="generated images for KID (paper: 5000)")
    p.add_argument("--n-lpips", metavar="N", type=int, default=1000, help="generated images for clustered LPIPS (paper: 1000)")
    p.add_argument("--kid-subsets", metavar="N", type=int, default=100, help="KID subsets to average (default 100)")
    p.add_argument("--kid-subset-size", metavar="N", type=int, default=1000,
                   help="largest KID subset; the size used is min(this, n real, n generated) (default 1000)")
    p.add_argument("--max-per-cluster", metavar="N", type=int, default=200,
                   help="LPIPS: keep at most this many members per cluster, first generated first (0 = no cap; default 200)")
    p.add_argument("--lpips-net", choices=LPIPS_NETS, default="alex", help="LPIPS backbone (default alex)")
    p.add_argument("--inception-weights", metavar="PATH", default=None,
                   help="torch-fidelity Inception-v3 weights (default: hub cache file weights-inception-2015-12-05-6726825d.pth)")
    p.add_argument("--lpips-backbone-weights", metavar="PATH", default=None,
                   help="torchvision ImageNet weights of the LPIPS backbone (default: hub cache, e.g. alexnet-owt-7be5be79.pth)")
    p.add_argument("--lpips-lin-weights", metavar="PATH", default=None, help="LPIPS v0.1 linear-layer weights (default: the file the lpips package ships)")
    p.add_argument("--glob", metavar="PATTERN", default=None, help="pick the generated images in the folder with this pattern, e.g. 'images/*.png'")
    p.add_argument("--resolution", default=None, help="crop-paste/cut-paste/perlin only: load the data at N or HxW (default: native)")
    p.add_argument("--truncation", metavar="PSI", type=float, default=1.0, help="checkpoint sampling: truncation psi (default 1.0, as the paper)")
    p.add_argument("--seed", metavar="S", type=int, default=0, help="seed for sampling, picking images from a folder and KID subsets")
    p.add_argument("--batch", metavar="N", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", metavar="DEVICE", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for results.json, report.md and tb/")
    p.add_argument("--random-features", action="store_true",
                   help="TEST ONLY: randomly initialised Inception and LPIPS networks instead of pretrained weights; "
                   "the numbers mean nothing and results.json records random_features: true")
    p.set_defaults(func=run)


def check_args(args) -> None:
    for name in ("n_kid", "n_lpips", "kid_subsets", "batch"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.kid_subset_size < 2:
        raise InputError(f"--kid-subset-size must be at least 2 (got {args.kid_subset_size})")
    if args.max_per_cluster < 0 or args.max_per_cluster == 1:
        raise InputError(f"--max-per-cluster must be 0 (no cap) or at least 2 (got {args.max_per_cluster})")


CLASSIC = ("crop-paste", "cut-paste", "perlin")


def scan_defect(args):
    """Index the category and check the defect type exists, before any network or sample is made."""
    index = scan_category(args.data, args.category)
    if args.defect not in index.defects:
        raise InputError(f"{index.folder / 'test'}: no defect type '{args.defect}' (have {', '.join(index.defect_types)})")
    return index


def generate_info(folder: Path, defect: str) -> dict:
    """What `inspect-train generate` recorded about the checkpoint behind a folder (partition, manifest), if anything."""
    path = folder / "generate.json"
    try:
        info = json.loads(path.read_text()).get("info", {}).get(defect, {}) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return {}
    return info if isinstance(info, dict) else {}


class Split:
    """The partition the generator belongs to (if any) and its manifest: explicit, or recorded in the checkpoint."""

    def __init__(self, args, index, out_dir: Path, checkpoint_info: dict):
        self.partition, manifest_arg = args.partition, args.manifest
        if self.partition is None and checkpoint_info.get("partition") is not None:
            self.partition = int(checkpoint_info["partition"])
            recorded = checkpoint_info.get("manifest")
            if manifest_arg is None and recorded and Path(recorded).is_file():
                manifest_arg = recorded
        self.manifest, self.manifest_path = None, None
        if self.partition is not None:
            self.manifest, self.manifest_path = manifest_for_run(index, manifest_arg, out_dir, args.partitions, args.split_seed)
            defects = get_partition(self.manifest, self.partition)["defects"]
            if args.defect not in defects:
                raise InputError(f"{self.manifest_path}: partition {self.partition} has no defect type '{args.defect}'")
            self.names = defects[args.defect]

    def part(self, which: str) -> list[str]:
        return list(self.names[which])


class GeneratedSource:
    """The generated images: how many, their size and channels, a batch stream, and the split they belong to."""

    def __init__(self, args, device: torch.device, warnings: list[str], index, out_dir: Path):
        path = Path(args.generated).expanduser()
        self.path = path
        self.n = max(args.n_kid, args.n_lpips)
        info: dict = {}
        if path.is_file():
            from generators.dfmgan.api import DFMGANGenerator

            gen = DFMGANGenerator.from_paths([path], device=device, truncation=args.truncation,
                                             paired_good=False)  # only the defect images are scored
            if args.defect not in gen.defect_types:
                raise InputError(f"{path}: checkpoint is for defect type '{gen.defect_types[0]}', not '{args.defect}'")
            info = {k: (str(v) if isinstance(v, Path) else v) for k, v in gen.info[args.defect].items()}
            if info.get("category") not in (None, args.category):
                warnings.append(f"checkpoint was trained on category '{info['category']}', scoring against '{args.category}'")
            self.kind, self.size, self.channels = "dfmgan-checkpoint", (gen.resolution, gen.resolution), gen.channels
            self.details = {"truncation": args.truncation, "checkpoint_info": info}
            self.batches = lambda: iter_generator(gen, args.defect, self.n, args.batch, args.seed)
        elif path.is_dir():
            paths, how = generated_image_paths(path, args.defect, args.glob)
            available = len(paths)
            if available < self.n:
                warnings.append(f"{path}: only {available} generated images (asked for KID {args.n_kid}, LPIPS {args.n_lpips}); using all")
                self.n = available
            order = torch.randperm(available, generator=torch.Generator().manual_seed(args.seed))[: self.n]
            paths = [paths[i] for i in order.tolist()]
            self.channels, self.size = folder_channels(paths)
            self.kind = "folder"
            self.details = {"picked": how, "available": available}
            info = generate_info(path, args.defect)
            if info:
                self.details["checkpoint_info"] = info
            self.batches = lambda: iter_folder(paths, args.batch, self.channels)
        elif args.generated in CLASSIC:
            self.kind = args.generated
        else:
            raise InputError(f"{path}: --generated is neither a folder, a checkpoint file nor one of {', '.join(CLASSIC)}")
        self.split = Split(args, index, out_dir, info)
        if self.kind in CLASSIC:
            self._classic(args, device, index)

    def _classic(self, args, device: torch.device, index) -> None:
        """A classic generator built from the partition's base set only, sampled on the fly."""
        from generators.registry import create_generator
        from inspect_train.data.category import load_category

        if self.split.partition is None:
            raise InputError(f"--generated {self.kind} needs --partition K: it copies from that partition's base set")
        data = load_category(args.data, args.category, size=parse_resolution(args.resolution), index=index)
        gen = create_generator(self.kind, data, {args.defect: self.split.part("base")}, device=device)
        self.size, self.channels = tuple(data.size), data.channels
        self.details = {"built_from": f"partition {self.split.partition} base set + train/good", "resolution": list(self.size)}
        self.batches = lambda: iter_generator(gen, args.defect, self.n, args.batch, args.seed)


def real_images(args, index, gen: GeneratedSource) -> tuple[torch.Tensor, dict]:
    """The real defect images to compare with, resized to the generated size, and a record of the choice."""
    split = gen.split
    real_set = args.real_set or ("test" if split.partition is not None else "all")
    if real_set != "all" and split.partition is None:
        raise InputError(f"--real-set {real_set} needs --partition K (and the --manifest the generator was trained with)")
    names = split.part(real_set) if real_set != "all" else sorted(item.name for item in index.defects[args.defect])
    by_name = index.defect_by_name(args.defect)
    loaded = load_image_set([by_name[n].image for n in names], size=gen.size)
    record = {
        "data": str(Path(args.data).expanduser()),
        "category": args.category,
        "defect": args.defect,
        "set": real_set,
        "partition": split.partition,
        "manifest": str(split.manifest_path) if split.manifest_path else None,
        "n": len(names),
        "names": names,
        "resized_to": list(gen.size),
        "why": {
            "all": "every real image of the type, as the DFMGAN paper compares",
            "test": "the partition's test part: images its generator never saw (scoring is evaluation, not training)",
            "base": "the partition's base part: the images the generator trained on",
        }[real_set],
    }
    return loaded.images, record


def run(args) -> int:
    from inspect_train.genmetrics.evaluate import score
    from inspect_train.genmetrics.inception import build_inception
    from inspect_train.genmetrics.lpips_net import BACKBONES, VERSION, build_lpips
    from inspect_train.genmetrics.record import append_report, append_results, log_tensorboard, read_results

    assert set(BACKBONES) == set(LPIPS_NETS)
    check_args(args)
    started = time.time()
    device = choose_device(args.device)
    out_dir = Path(args.out).expanduser()
    warnings: list[str] = []
    index = scan_defect(args)
    read_results(out_dir)  # an unusable results.json in --out fails now, not after the scoring
    # Load the networks first: a missing weights file should stop the run before any sampling.
    inception = build_inception(args.inception_weights, random_init=args.random_features, seed=args.seed,
                                device=device, batch=args.batch)
    embedder = build_lpips(args.lpips_net, backbone_weights=args.lpips_backbone_weights,
                           lin_weights=args.lpips_lin_weights, random_init=args.random_features,
                           seed=args.seed, device=device, batch=args.batch)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = GeneratedSource(args, device, warnings, index, out_dir)
    real, real_record = real_images(args, index, gen)
    if real.shape[0] < 2:
        raise InputError(f"{args.category}/{args.defect}: only {real.shape[0]} real image(s) in the '{real_record['set']}' set; KID needs 2")
    for line in warnings:
        print(f"inspect-train: warning: {line}", file=sys.stderr)
    n_batches = -(-gen.n // args.batch)
    scores = score(gen.batches(), real, inception, embedder, n_kid=min(args.n_kid, gen.n), n_lpips=min(args.n_lpips, gen.n),
                   kid_subsets=args.kid_subsets, kid_max_subset_size=args.kid_subset_size,
                   max_per_cluster=args.max_per_cluster or None, seed=args.seed, batch=args.batch, total=n_batches)
    kid = dict(scores["kid"], feature="Inception-v3 pool3, 2048-d (torch-fidelity, TF-compatible)",
               kernel="(x.y/d + 1)^3, unbiased MMD^2, mean/std over subsets", weights=inception.weights)
    lpips = dict(scores["clustered_lpips"], net=args.lpips_net, version=VERSION, weights=embedder.weights,
                 singleton_rule="clusters with < 2 members count 0 in 'value' and are left out of 'value_nonempty'")
    entry = {
        "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": round(time.time() - started, 2),
        "random_features": bool(args.random_features),
        "seed": args.seed,
        "device": str(device),
        "generated": {"kind": gen.kind, "path": str(gen.path), **gen.details},
        "real": real_record,
        "kid": kid,
        "clustered_lpips": lpips,
        "warnings": warnings,
        "arguments": {k: v for k, v in vars(args).items() if k != "func"},
    }
    results = append_results(out_dir, entry)
    append_report(out_dir, entry)
    log_tensorboard(out_dir, entry, step=len(results["runs"]) - 1)
    note = "  [RANDOM FEATURES: test only, meaningless]" if args.random_features else ""
    print(f"KID x1e3 = {kid['x1e3_mean']:.3f} ± {kid['x1e3_std']:.3f}  ({kid['n_generated']} generated vs "
          f"{kid['n_real']} real '{real_record['set']}', {kid['subsets']} subsets of {kid['subset_size']}){note}")
    nonempty = "n/a" if lpips["value_nonempty"] is None else f"{lpips['value_nonempty']:.4f}"
    print(f"clustered LPIPS = {lpips['value']:.4f}  (over clusters with >= 2 members: {nonempty}; "
          f"{lpips['n_generated']} generated, {len(lpips['cluster_sizes'])} clusters, LPIPS-{args.lpips_net}){note}")
    print(f"wrote {out_dir / 'results.json'}, {out_dir / 'report.md'}, {out_dir / 'tb'}")
    return 0
