"""`inspect-train generate`: write synthetic samples (defect image, 0/255 mask, paired good image) and boxes.

From the checkpoints of any learned generator (the generator is told by the files' kind): `--n` samples per
defect type, or, for a generator that paints on real good images, one painted image per mask PNG of `--masks DIR`
(or `--n` deformed base masks), each on a real train/good image of `--data`/`--category`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from generators.mask_folder import read_mask_folder
from generators.sample_writer import SampleWriter
from inspect_train.commands import COMMANDS
from inspect_train.commands._task_flags import add_generator_flags
from inspect_train.data.images import load_image_set
from inspect_train.data.mvtec import scan_category
from inspect_train.errors import InputError
from inspect_train.output_paths import check_output_folder
from inspect_train.tasks.generators import loading, read_learned_checkpoint
from inspect_train.validators import add_threads_flag, positive_int, whole_number


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help=COMMANDS["generate"][1])
    p.add_argument("--checkpoint", action="append", required=True,
                   help="a learned generator's checkpoint for one defect type (repeat for several defect types)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="samples per checkpoint (defect type); a painter with --masks: one per mask instead")
    p.add_argument("--masks", default=None,
                   help="painters: a folder of mask PNGs (any size, resized to the painter's); one image per mask")
    p.add_argument("--data", default=None, help="painters: dataset root whose train/good images are painted on")
    p.add_argument("--category", default=None, help="painters: category under --data")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    add_generator_flags(p, "generate")
    p.add_argument("--format", choices=("coco", "yolo"), default=None, help="also write detection labels")
    p.add_argument("--box-join", type=whole_number, default=0, metavar="R",
                   help="--format: pieces of a mask at most 2R pixels apart share one box (default 0: one box per "
                        "8-connected component), as in detect --box-join")
    p.add_argument("--batch", type=positive_int, default=16, help="samples per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    add_threads_flag(p)
    p.set_defaults(func=run_generate)


def read_generator_checkpoints(paths: list[str], category: str | None):
    """(the spec of the generator that wrote the files, {defect type: path}, the first file's contents): every file
    from the same learned generator, one per defect type, and from `category` where a file records its own."""
    spec, mapping, first = None, {}, None
    for path in paths:
        found, state = read_learned_checkpoint(path)
        if spec is not None and found is not spec:
            raise InputError(f"{path}: a {found.name} checkpoint beside {spec.name} ones (one generator per command)")
        spec, first = found, first or state
        defect = state.get("defect_type")
        if defect in mapping:
            raise InputError(f"{path}: a second checkpoint for defect type '{defect}'")
        trained_on = state.get("category")
        if category and trained_on and trained_on != category:
            raise InputError(f"{path}: {spec.name} was trained on category '{trained_on}', not '{category}'")
        mapping[defect] = Path(path)
    return spec, mapping, first


def _goods(args, spec, size):
    """The train/good images a painter paints on, at its size; refused for a generator that draws whole images."""
    if not spec.learned.needs_goods:
        if args.masks or args.data:
            raise InputError(f"{args.checkpoint[0]}: --masks and --data are for generators that paint on real good "
                             f"images; {spec.name} draws whole images")
        if args.n is None:
            raise InputError("--n is required (samples per checkpoint)")
        return None
    if not args.data or not args.category:
        raise InputError(f"{spec.name} paints on real train/good images: give --data and --category")
    if (args.masks is None) == (args.n is None):
        raise InputError(f"{spec.name}: give either --masks DIR (one image per mask) or --n (deformed base masks)")
    index = scan_category(args.data, args.category)
    goods = load_image_set(index.train_good, size=size)
    if len(goods) == 0:
        raise InputError(f"{index.folder / 'train' / 'good'}: no images to paint on")
    return goods


def run_generate(args) -> int:
    out = check_output_folder(args.out)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    spec, mapping, first = read_generator_checkpoints(args.checkpoint, args.category)
    options = spec.flag_values(args, "generate")
    if spec.check_options:
        spec.check_options(options)
    size = spec.learned.size_of(first)
    goods = _goods(args, spec, size)
    mask_names, masks = None, None
    if args.masks:
        mask_names, masks = read_mask_folder(args.masks, size[0])
    with loading(list(mapping.values()), spec.learned.kind):
        generator = spec.learned.load(mapping, goods, device, options)
    writer = SampleWriter(out, generator.defect_types, args.format, args.box_join)
    rng = torch.Generator(device=device).manual_seed(args.seed)
    per_type = len(mask_names) if mask_names is not None else args.n
    good_used = []
    with tqdm(total=per_type * len(generator.defect_types), desc="generate", unit="img") as bar:
        for defect_type in generator.defect_types:
            for start in range(0, per_type, args.batch):
                n = min(args.batch, per_type - start)
                if masks is not None:  # paint into the user's masks, each on a drawn train/good image
                    picked = torch.randint(generator.goods.shape[0], (n,), generator=rng, device=rng.device)
                    chunk_goods = generator.goods[picked.to(generator.device)]
                    chunk_masks = masks[start:start + n].to(generator.device)
                    images = generator.paint(chunk_goods, chunk_masks, defect_type, rng)
                    good_used += [generator.good_names[i] for i in picked.tolist()]
                else:
                    batch = generator.sample(n, defect_type, rng)
                    images, chunk_masks, chunk_goods = batch.images, batch.masks, batch.goods
                for i in range(n):
                    writer.add(defect_type, images[i], chunk_masks[i],
                               None if chunk_goods is None else chunk_goods[i])
                bar.update(n)
    meta = {"checkpoints": [str(Path(c).resolve()) for c in args.checkpoint], "generator": spec.name,
            "n": per_type, "seed": args.seed, "options": options, "format": args.format, "box_join": args.box_join,
            "defect_types": generator.defect_types, "info": generator.info}
    if goods is not None:
        meta.update(masks=str(Path(args.masks).resolve()) if args.masks else None, mask_files=mask_names,
                    good_files=good_used or None, data=str(args.data), category=args.category)
    writer.finish(meta)
    print(f"wrote {len(writer.rows)} samples to {args.out}")
    return 0
