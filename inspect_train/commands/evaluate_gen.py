"""`inspect-train evaluate-gen`: judge defect generators against a partition's real base set, offline, in minutes.

For each defect type and generator: mask statistics and their distance to the real masks, a real-vs-generated
two-sample classifier, diversity on a fixed random network, a contact sheet (real base defects, then each
generator's samples, with mask outlines); KID and clustered LPIPS as well when their pretrained weights are
on the machine. The real side is the partition's base set only, all a generator may see (the protocol):
the test images are never read. Generators: the classic ones built from that base set, DFMGAN and the inpaint
painters from a generators folder that classify/segment wrote (or explicit checkpoints), and folders written
by `generate`.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from generators.registry import GENERATORS
from inspect_train.errors import InputError

LPIPS_NETS = ("alex", "squeeze", "vgg")
BUILT_HERE = ("crop-paste", "cut-paste", "perlin", "dfmgan", "inpaint")  # generators this command can build
CACHED = {"dfmgan": "a DFMGAN stage-2", "inpaint": "an inpaint painter"}  # trained ones: --generators, --checkpoint


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-gen",
        help="judge generators against a partition's base set: mask statistics, a real-vs-generated test, "
             "diversity, contact sheets (no pretrained weights needed)",
        description="Score defect generators against the real base set of one partition (never its test images): "
        "mask statistics (area, pieces, border, elongation, angle, placement) and their distance to the real "
        "ones, the held-out accuracy of a classifier telling real from generated (0.5 = indistinguishable), "
        "diversity on a fixed random network, and a contact sheet per defect type. KID and clustered LPIPS "
        "are added when their pretrained weights are found (never downloaded).",
    )
    p.add_argument("--aug", nargs="+", metavar="A", default=[],
                   help=f"generators to score ({', '.join(BUILT_HERE)}); the classic ones are built from the "
                   "partition's base set, dfmgan and inpaint need --generators or --checkpoint")
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
                   help="dfmgan, inpaint: the generators folder a classify/segment run wrote (OUT/generators: "
                   "DFMGAN's index.json, the painters' inpaint/index.json)")
    p.add_argument("--checkpoint", metavar="DEFECT=PATH", nargs="+", action="extend", default=[],
                   help="dfmgan, inpaint: a DFMGAN stage-2 or an inpaint painter checkpoint for a defect type (wins "
                   "over --generators for that type); each file goes to the generator that wrote it, so with "
                   "--aug dfmgan inpaint give one of each for a type to replace both")
    p.add_argument("--images", metavar="DIR", default=None,
                   help="also score a folder of generated images and masks (as `generate` writes: index.csv, "
                   "images/, masks/)")
    p.add_argument("--glob", metavar="PATTERN", default=None, help="--images: pick the images with this pattern")
    p.add_argument("--defect", metavar="T", nargs="+", default=None, help="defect types (default: all of the partition)")
    p.add_argument("--n", metavar="N", type=int, default=256, help="samples per defect type and generator (default 256)")
    p.add_argument("--resolution", default=None,
                   help="compare at N or HxW (default: the DFMGAN generators' resolution when scored, else the "
                   "painters' when inpaint is, else the --images size, else the data's own size)")
    p.add_argument("--folds", metavar="K", type=int, default=5, help="two-sample test: folds (default 5, fewer when the base set is small)")
    p.add_argument("--repeats", metavar="R", type=int, default=5, help="two-sample test: draws of generated samples (default 5)")
    p.add_argument("--truncation", metavar="PSI", type=float, default=1.0, help="dfmgan: truncation psi of the defect code (default 1.0)")
    p.add_argument("--seed", metavar="S", type=int, default=0, help="seed for sampling and the two-sample folds (default 0)")
    p.add_argument("--batch", metavar="N", type=int, default=32, help="samples per forward pass (default 32)")
    p.add_argument("--device", metavar="DEVICE", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", metavar="N", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default runs/evaluate-gen-<time>)")
    kid = p.add_argument_group("KID and clustered LPIPS (only when their weights are found or given)")
    kid.add_argument("--inception-weights", metavar="PATH", default=None,
                     help="torch-fidelity Inception-v3 weights (default: hub cache file weights-inception-2015-12-05-6726825d.pth)")
    kid.add_argument("--lpips-backbone-weights", metavar="PATH", default=None,
                     help="torchvision ImageNet weights of the LPIPS backbone (default: hub cache, e.g. alexnet-owt-7be5be79.pth)")
    kid.add_argument("--lpips-lin-weights", metavar="PATH", default=None, help="LPIPS v0.1 linear-layer weights (default: the lpips package's)")
    kid.add_argument("--lpips-net", choices=LPIPS_NETS, default="alex", help="LPIPS backbone (default alex)")
    kid.add_argument("--kid-subsets", metavar="N", type=int, default=100, help="KID subsets to average (default 100)")
    kid.add_argument("--kid-subset-size", metavar="N", type=int, default=1000, help="largest KID subset (default 1000)")
    kid.add_argument("--max-per-cluster", metavar="N", type=int, default=200,
                     help="LPIPS: at most this many members per cluster (0 = no cap; default 200)")
    kid.add_argument("--random-features", action="store_true",
                     help="TEST ONLY: KID/LPIPS on randomly initialised networks; their numbers mean nothing")
    p.add_argument("--generated", default=None, help=__import__("argparse").SUPPRESS)  # the old flag: one clear line
    p.set_defaults(func=run)


def check_args(args) -> None:
    if args.generated is not None:
        raise InputError("--generated is gone: use --images DIR for a folder, --aug dfmgan|inpaint --checkpoint "
                         "DEFECT=PATH for a DFMGAN or painter checkpoint, or --aug crop-paste ... for a classic generator")
    unknown = [a for a in args.aug if a not in GENERATORS]
    if unknown:
        raise InputError(f"--aug {unknown[0]}: not a generator (choose from {', '.join(GENERATORS)})")
    elsewhere = [a for a in args.aug if a not in BUILT_HERE]
    if elsewhere:
        raise InputError(f"--aug {elsewhere[0]}: evaluate-gen builds {', '.join(BUILT_HERE)}; score another "
                         "generator's samples as a folder with --images DIR")
    if not args.aug and not args.images:
        raise InputError("nothing to score: give --aug A [A ...] and/or --images DIR")
    if args.checkpoint and not set(CACHED) & set(args.aug):
        raise InputError("--checkpoint is for --aug dfmgan or inpaint")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads {args.threads}: must be at least 1")
    for name, least in (("n", 2), ("folds", 2), ("repeats", 1), ("batch", 1), ("kid_subsets", 1), ("kid_subset_size", 2)):
        if getattr(args, name) < least:
            raise InputError(f"--{name.replace('_', '-')} must be at least {least} (got {getattr(args, name)})")
    if args.max_per_cluster < 0 or args.max_per_cluster == 1:
        raise InputError(f"--max-per-cluster must be 0 (no cap) or at least 2 (got {args.max_per_cluster})")
    if not 0.0 <= args.truncation <= 1.0:
        raise InputError(f"--truncation {args.truncation}: must be between 0 and 1")


class Split:
    """The manifest and the partition whose base sets are the real side."""

    def __init__(self, args, index, out_dir: Path):
        from inspect_train.protocol import get_partition, make_manifest, read_manifest

        if args.manifest:
            self.manifest, self.path, self.made = read_manifest(args.manifest, index), Path(args.manifest).resolve(), False
        else:
            self.manifest = make_manifest(index, partitions=args.partitions, seed=args.split_seed)
            self.path, self.made = (out_dir / "manifest.json").resolve(), True
        where = self.path if args.manifest else f"the split made like `data split` ({args.partitions} partitions, seed {args.split_seed})"
        try:
            part = get_partition(self.manifest, args.partition)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        self.partition = args.partition
        types = sorted(part["defects"])
        chosen = args.defect or types
        for defect in chosen:
            if defect not in index.defects:
                raise InputError(f"{index.folder / 'test'}: no defect type '{defect}' (have {', '.join(index.defect_types)})")
            if defect not in part["defects"]:
                raise InputError(f"{where}: partition {args.partition} has no defect type '{defect}' (has {', '.join(types)})")
        self.defects = list(dict.fromkeys(chosen))
        self.base = {d: list(part["defects"][d]["base"]) for d in self.defects}
        self.test = {d: list(part["defects"][d]["test"]) for d in self.defects}

    def save(self) -> None:
        if self.made:
            from inspect_train.protocol import write_json_atomic

            write_json_atomic(self.manifest, self.path)


def parse_checkpoints(values: list[str]) -> list[tuple[str, Path]]:
    out = []
    for value in values:
        defect, sep, path = value.partition("=")
        if not sep or not defect or not path:
            raise InputError(f"--checkpoint {value}: expected DEFECT=PATH, e.g. crack=runs/gan/defect_crack.pt")
        out.append((defect, Path(path).expanduser()))
    return out


def cached_index(folder: Path, kind: str) -> tuple[Path, dict]:
    """The index of `kind`'s generators under a classify/segment generators folder: DFMGAN's is DIR/index.json,
    the painters' DIR/inpaint/index.json (the painters' own folder is taken too)."""
    from inspect_train.protocol import read_json
    from inspect_train.tasks.generators import INDEX

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: generators folder not found")
    path = folder / INDEX
    if kind == "inpaint" and (folder / "inpaint" / INDEX).is_file():
        path = folder / "inpaint" / INDEX
    index = read_json(path, "generator index") if path.is_file() or kind == "dfmgan" else None
    holds = index.get("generator", "dfmgan") if isinstance(index, dict) else None  # DFMGAN's predates the key
    if kind == "inpaint" and holds != "inpaint":
        raise InputError(f"{folder}: no inpaint painters here (no inpaint/{INDEX}); train them with "
                         "classify/segment --aug inpaint")
    if not isinstance(index, dict) or not isinstance(index.get("defects"), dict):
        raise InputError(f"{path}: not a generators index (no 'defects')")
    if holds != kind:
        raise InputError(f"{path}: holds {holds} generators, not {kind} ones")
    return path, index


def checkpoints_from_folder(folder: Path, kind: str, split: Split, category: str, defects: list[str]) -> dict[str, Path]:
    """The checkpoints (DFMGAN stage 2 or inpaint painters) a classify/segment run cached for this partition,
    refused unless trained on exactly this base set (else scoring against it would compare with images the
    generator never saw, and the generator may have seen this partition's test images)."""
    path, index = cached_index(folder, kind)
    if index.get("category") not in (None, category):
        raise InputError(f"{path}: generators were trained on category '{index['category']}', not '{category}'")
    key = f"p{split.partition}"
    entries = index["defects"].get(key)
    if not entries:
        have = ", ".join(sorted(index["defects"])) or "none"
        raise InputError(f"{path}: no generators for partition {split.partition} (has {have}); train them with "
                         f"classify/segment --aug {kind} --partitions {split.partition}")
    out = {}
    for defect in defects:
        entry = entries.get(defect)
        if entry is None:
            raise InputError(f"{path}: no P{split.partition} generator for defect type '{defect}' (has {', '.join(sorted(entries))})")
        if sorted(entry.get("base", [])) != sorted(split.base[defect]):
            raise InputError(f"{path}: the P{split.partition} '{defect}' generator was trained on another base set "
                             f"than {split.path} names; pass the --manifest that run used")
        checkpoint = path.parent / entry["checkpoint"]
        if not checkpoint.is_file():
            raise InputError(f"{checkpoint}: listed in {path.name} but not found")
        out[defect] = checkpoint
    return out


def checkpoint_kind(path: Path, defect: str) -> tuple[str, dict]:
    """Which generator wrote a --checkpoint file (so each goes to its own --aug), and the file's contents."""
    from generators.inpaint.checkpoint import is_painter, read_any_checkpoint

    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found (--checkpoint {defect}=...)")
    state = read_any_checkpoint(path)
    if is_painter(state):
        return "inpaint", state
    if state.get("kind") == "dfmgan-defect":
        return "dfmgan", state
    raise InputError(f"{path}: is a {state.get('kind', 'unknown')} checkpoint, not a DFMGAN stage-2 (dfmgan-defect) "
                     "or an inpaint painter one")


def check_checkpoint(path: Path, state: dict, defect: str, split: Split, category: str) -> None:
    """An explicit checkpoint must be for this defect type and, where it records them, this category,
    partition and base set."""
    if state.get("defect_type") != defect:
        raise InputError(f"{path}: is a checkpoint for defect type '{state.get('defect_type')}', not '{defect}'")
    if state.get("category") not in (None, category):
        raise InputError(f"{path}: was trained on category '{state['category']}', not '{category}'")
    if state.get("partition") is not None and int(state["partition"]) != split.partition:
        raise InputError(f"{path}: was trained on partition {state['partition']}, not {split.partition}")
    base = state.get("base") or state.get("base_images")
    if base is not None and sorted(base) != sorted(split.base[defect]):
        raise InputError(f"{path}: was trained on another base set than {split.path} names for partition "
                         f"{split.partition}; pass the --manifest it was trained with")


def explicit_checkpoints(args, split: Split, category: str) -> dict[str, dict[str, Path]]:
    """--checkpoint DEFECT=PATH sorted by the generator that wrote each file: {dfmgan|inpaint: {defect: path}}."""
    out: dict[str, dict[str, Path]] = {kind: {} for kind in CACHED}
    for defect, path in parse_checkpoints(args.checkpoint):
        if defect not in split.defects:
            raise InputError(f"--checkpoint {defect}=...: '{defect}' is not among the defect types scored ({', '.join(split.defects)})")
        kind, state = checkpoint_kind(path, defect)
        if kind not in args.aug:
            raise InputError(f"--checkpoint {defect}={path}: is {CACHED[kind]} checkpoint, but --aug has no {kind}")
        if defect in out[kind]:
            raise InputError(f"--checkpoint: two {kind} checkpoints for defect type '{defect}'")
        check_checkpoint(path, state, defect, split, category)
        out[kind][defect] = path
    return out


def generator_checkpoints(args, kind: str, explicit: dict[str, Path], split: Split,
                          category: str) -> tuple[dict[str, Path], str]:
    """One checkpoint per scored defect type for `kind` (dfmgan or inpaint): --checkpoint first, the rest from
    --generators; and where they came from (for results.json)."""
    missing = [d for d in split.defects if d not in explicit]
    if missing and not args.generators:
        if explicit:
            raise InputError(f"--aug {kind}: no checkpoint for defect type(s) {', '.join(missing)}; add --checkpoint "
                             "DEFECT=PATH, --generators DIR, or choose types with --defect")
        raise InputError(f"--aug {kind} needs --generators DIR (the OUT/generators folder of a classify/segment run "
                         f"with --aug {kind}) or --checkpoint DEFECT=PATH")
    found = checkpoints_from_folder(Path(args.generators), kind, split, category, missing) if missing else {}
    origin = "checkpoints" if not found else (f"{args.generators}" + (" + checkpoints" if explicit else ""))
    return {d: explicit.get(d) or found[d] for d in split.defects}, origin


def base_only_data(index, split: Split, size):
    """train/good and the partition's base defect images, nothing else: a restricted index is loaded, so the
    test images (test/good and every defect image outside the base sets) are never even read."""
    from inspect_train.data.category import load_category
    from inspect_train.data.mvtec import CategoryIndex

    defects = {}
    for defect, names in split.base.items():
        by_name = index.defect_by_name(defect)
        defects[defect] = [by_name[n] for n in names]
    restricted = CategoryIndex(root=index.root, category=index.category, train_good=list(index.train_good),
                               test_good=[], defects=defects)
    return load_category(index.root, index.category, size=size, index=restricted)


class Source:
    """One row of every table: a name and how to draw n (image, mask) samples of a defect type."""

    def __init__(self, name: str, record: dict, draw):
        self.name, self.record, self.draw = name, record, draw


def folder_source(args, split: Split, size, channels: int, warnings: list[str]) -> Source:
    import torch

    from inspect_train.genmetrics.sources import generated_pairs, load_pairs, tells_defect_types

    folder = Path(args.images).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: --images folder not found")
    typed = tells_defect_types(folder, split.defects, args.glob)
    if len(split.defects) > 1 and not typed:
        raise InputError(f"{folder}: cannot tell which defect type each image is (no defect_type column in an index, "
                         "no <defect>/ subfolders, or --glob); choose one with --defect")

    def draw(defect: str, n: int):
        try:
            images, masks, how = generated_pairs(folder, defect, args.glob)
        except InputError as err:
            if typed and "no sample of defect type" in str(err):
                warnings.append(f"{folder}: no sample of defect type '{defect}'; left out of that table")
                return None
            raise
        if len(images) < n:
            warnings.append(f"{folder}: only {len(images)} '{defect}' images (asked for {n}); using all")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:n].tolist()
        return load_pairs([images[i] for i in order], [masks[i] for i in order], size, channels)

    return Source(f"images: {folder.name}", {"kind": "folder", "path": str(folder.resolve()), "glob": args.glob}, draw)


def folder_size(args, split: Split) -> tuple[int, int]:
    """(H, W) of the first generated image of the first defect type the --images folder has."""
    from inspect_train.data.images import read_image_array
    from inspect_train.genmetrics.sources import generated_pairs

    error = None
    for defect in split.defects:
        try:
            images, _, _ = generated_pairs(Path(args.images), defect, args.glob)
        except InputError as err:
            error = err
            continue
        return tuple(read_image_array(images[0]).shape[:2])
    raise error


def default_out() -> Path:
    return Path("runs") / f"evaluate-gen-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def score_defect(defect: str, real, sources: list[Source], extractor, nets: tuple, args,
                 real_label: str = "real base set") -> tuple[list[dict], list]:
    """The table rows of one defect type (the real base set first, then each source) and the contact sheet's
    blocks (label, images, masks)."""
    from inspect_train.genmetrics.diversity import mean_pairwise_distance
    from inspect_train.genmetrics.evaluate import score_pair
    from inspect_train.genmetrics.mask_stats import mask_distance, mask_features, mask_iou_diversity, summarize
    from inspect_train.genmetrics.two_sample import classifier_features, two_sample_test

    real_features = mask_features(real.masks)
    real_conv = extractor(real.images, real.masks)
    real_x, feature_blocks = classifier_features(real_conv, real.masks, real_features)
    real_diversity = mean_pairwise_distance(real_conv)
    rows = [{"source": "real base set", "kind": "real", "n": len(real), "mask": summarize(real_features),
             "mask_distance": {"value": 0.0, "per_feature": {}, "skipped": []},
             "diversity": real_diversity, "mask_diversity": mask_iou_diversity(real.masks)}]
    blocks = [(real_label, real.images, real.masks)]
    for source in sources:
        started = time.time()
        drawn = source.draw(defect, args.n)
        if drawn is None:
            continue
        images, masks = drawn
        seconds = time.time() - started
        features = mask_features(masks)
        conv = extractor(images, masks)
        x, _ = classifier_features(conv, masks, features)
        diversity = mean_pairwise_distance(conv)
        row = {"source": source.name, "kind": source.record["kind"], "n": int(images.shape[0]),
               "sample_seconds": round(seconds, 2), "mask": summarize(features),
               "mask_distance": mask_distance(real_features, features),
               "two_sample": two_sample_test(real_x, x, blocks=feature_blocks, folds=args.folds,
                                             repeats=args.repeats, seed=args.seed),
               "diversity": diversity, "mask_diversity": mask_iou_diversity(masks),
               "diversity_vs_real": diversity / real_diversity if diversity is not None and real_diversity else None}
        if any(net is not None for net in nets):
            row.update(score_pair(images, real.images, *nets, kid_subsets=args.kid_subsets,
                                  kid_max_subset_size=args.kid_subset_size,
                                  max_per_cluster=args.max_per_cluster or None, seed=args.seed, batch=args.batch))
        rows.append(row)
        accuracy, distance = row["two_sample"]["accuracy"], row["mask_distance"]["value"]
        accuracy = "n/a" if accuracy is None else f"{accuracy:.2f}"
        print(f"  {defect}: {source.name}: {row['n']} samples in {seconds:.1f} s; real-vs-generated accuracy "
              f"{accuracy}, mask distance {'n/a' if distance is None else f'{distance:.2f}'}")
        blocks.append((f"{source.name} ({row['n']} samples; real-vs-generated accuracy {accuracy})", images, masks))
    return rows, blocks


def run(args) -> int:
    import torch

    from generators.registry import create_generator
    from inspect_train.data.images import parse_resolution
    from inspect_train.data.mvtec import scan_category
    from inspect_train.genmetrics.contact_sheet import contact_sheet
    from inspect_train.genmetrics.evaluate import metric_networks
    from inspect_train.genmetrics.random_features import SEED, WIDTHS, RandomConvFeatures
    from inspect_train.genmetrics.record import log_tensorboard, markdown_table, write_outputs
    from inspect_train.genmetrics.sources import sample_generator
    from inspect_train.tasks.common import choose_device

    check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.time()
    device = choose_device(args.device)
    out_dir = Path(args.out).expanduser() if args.out else default_out()
    warnings: list[str] = []
    index = scan_category(args.data, args.category)
    split = Split(args, index, out_dir)

    explicit = explicit_checkpoints(args, split, args.category)
    trained = {kind: generator_checkpoints(args, kind, explicit[kind], split, args.category)
               for kind in CACHED if kind in args.aug}  # {kind: ({defect: checkpoint}, origin)}
    dfmgan, painter_side = None, None
    if "dfmgan" in trained:
        from generators.dfmgan.sampler import DFMGANGenerator

        dfmgan = DFMGANGenerator(trained["dfmgan"][0], device=device, truncation=args.truncation, paired_good=False)
    if "inpaint" in trained:
        from generators.inpaint.checkpoint import load_painter_checkpoint

        painter_side = int(load_painter_checkpoint(next(iter(trained["inpaint"][0].values())))["resolution"])
    size = parse_resolution(args.resolution)
    if size is None and dfmgan is not None:
        size = dfmgan.size
    if size is None and painter_side is not None:
        size = (painter_side, painter_side)
    if size is None and args.images:
        size = folder_size(args, split)
    data = base_only_data(index, split, size)
    size, channels = tuple(data.size), data.channels

    sources: list[Source] = []
    for name in args.aug:
        if name in trained:
            checkpoints, origin = trained[name]
            record = {"kind": name, "from": origin, "checkpoints": {d: str(p) for d, p in checkpoints.items()}}
        if name == "dfmgan":
            record.update(resolution=dfmgan.resolution, truncation=args.truncation)
            gen = dfmgan
        elif name == "inpaint":
            # The painters paint real train/good images at their own resolution (the data is loaded again at that
            # size, still base set + train/good only); their samples are resized to `size` like every other's.
            painter_data = data if size == (painter_side, painter_side) else base_only_data(
                index, split, (painter_side, painter_side))
            gen = create_generator("inpaint", painter_data, split.base, device=device, checkpoints=checkpoints)
            record.update(resolution=gen.resolution, masks="deformed base-set masks", painted_on="train/good")
        else:
            gen = create_generator(name, data, split.base, device=device)
            record = {"kind": "classic", "built_from": f"partition {split.partition} base set + train/good"}
        sources.append(Source(name, record, lambda defect, n, gen=gen, name=name: sample_generator(
            gen, defect, n, size=size, channels=channels, seed=args.seed, batch=args.batch, desc=f"{defect}: {name}")))
    if args.images:
        sources.append(folder_source(args, split, size, channels, warnings))

    inception, embedder, kid_note = metric_networks(
        inception_weights=args.inception_weights, lpips_backbone_weights=args.lpips_backbone_weights,
        lpips_lin_weights=args.lpips_lin_weights, lpips_net=args.lpips_net, random_features=args.random_features,
        size=size, seed=args.seed, device=device, batch=args.batch)
    if kid_note:
        print(f"note: {kid_note}")
    out_dir.mkdir(parents=True, exist_ok=True)
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
    return 0
