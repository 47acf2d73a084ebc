"""`inspect-train data`: make the toy dataset, check a dataset folder, write the few-shot split."""

from __future__ import annotations


from inspect_train.commands import COMMANDS
from inspect_train.data.category import load_category
from inspect_train.data.check import format_table, summarise
from inspect_train.data.images import parse_resolution
from inspect_train.data.mvtec import scan_category
from inspect_train.data.toy import write_toy_dataset
from inspect_train.output_paths import check_output_file, check_output_folder
from inspect_train.protocol import make_manifest, write_json_atomic
from inspect_train.validators import positive_int


def add_data_arguments(parser, required: bool = True) -> None:
    """--data/--category/--resolution, shared by every command that reads a dataset."""
    parser.add_argument("--data", required=required, help="dataset root in MVTec AD layout (holds <category>/train, test, ground_truth)")
    parser.add_argument("--category", required=required, help="category folder under --data, e.g. aitex")
    parser.add_argument("--resolution", default=None, help="resize to N (square) or HxW; images bilinear, masks nearest then binarised")


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help=COMMANDS["data"][1])
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    toy = sub.add_parser("toy", help="write the built-in procedural dataset (category 'toy') in MVTec AD layout")
    toy.add_argument("--out", required=True, help="folder to write; the category lands in OUT/toy")
    toy.add_argument("--seed", type=int, default=0)
    toy.set_defaults(func=run_toy)

    check = sub.add_parser("check", help="load and validate a category and print what it holds")
    add_data_arguments(check)
    check.set_defaults(func=run_check)

    split = sub.add_parser("split", help="write the few-shot protocol manifest (base third / test two-thirds per defect type)")
    add_data_arguments(split)
    split.add_argument("--partitions", type=positive_int, default=3, help="number of partitions P1..Pk (default 3)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", required=True, help="manifest JSON file to write")
    split.set_defaults(func=run_split)


def run_toy(args) -> int:
    out = write_toy_dataset(check_output_folder(args.out), seed=args.seed)
    print(f"wrote toy dataset to {out / 'toy'} (use --data {out} --category toy)")
    return 0


def run_check(args) -> int:
    index = scan_category(args.data, args.category)
    rows = summarise(index)
    size = parse_resolution(args.resolution)
    if size:
        data = load_category(args.data, args.category, size=size, index=index)
        for row in rows:
            defect = row.split.removeprefix("test/")
            if defect in data.defects:
                masks = data.defects[defect].masks
                row.resized_coverage = (masks.flatten(1).float().mean(1) * 100).tolist()
    print(f"category {index.category} at {index.folder}" + (f", loaded at {size[1]}x{size[0]} (WxH)" if size else ""))
    print(format_table(rows))
    total = sum(len(r.sizes) for r in rows)
    print(f"ok: {total} images, {len(index.defects)} defect types, every defect image has a valid mask")
    return 0


def run_split(args) -> int:
    check_output_file(args.out)
    index = scan_category(args.data, args.category)
    summarise(index)  # read every file first: a bad image or mask must stop us before anything is written
    manifest = make_manifest(index, partitions=args.partitions, seed=args.seed)
    path = write_json_atomic(manifest, args.out)
    print(f"wrote {path}: {args.partitions} partition(s) of {len(index.defects)} defect type(s)")
    for defect in index.defect_types:
        split = manifest["partitions"][0]["defects"][defect]
        print(f"  {defect}: {len(split['base'])} base / {len(split['test'])} test per partition")
    return 0
