"""`inspect-train generate`: write synthetic samples (defect image, 0/255 mask, paired good image) and boxes.

From DFMGAN stage-2 checkpoints (`--n` per defect type), or from inpaint painters: one painted image per mask
PNG of `--masks DIR` (or `--n` deformed base masks), each on a real train/good image of `--data`/`--category`.
"""

from __future__ import annotations

from pathlib import Path

from inspect_train.errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="write synthetic defect images, masks, paired good images and boxes")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="DFMGAN stage-2 or inpaint painter checkpoint (repeat for several defect types)")
    p.add_argument("--n", type=int, default=None,
                   help="samples per checkpoint (defect type); inpaint with --masks: one per mask instead")
    p.add_argument("--masks", default=None,
                   help="inpaint: a folder of mask PNGs (any size, resized to the painter's); one image per mask")
    p.add_argument("--data", default=None, help="inpaint: dataset root whose train/good images are painted on")
    p.add_argument("--category", default=None, help="inpaint: category under --data")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0, help="dfmgan: truncation psi of the defect code (1 = none; lower = more typical defects; the part is never truncated)")
    p.add_argument("--format", choices=("coco", "yolo"), default=None, help="also write detection labels")
    p.add_argument("--box-join", type=int, default=0, metavar="R",
                   help="--format: pieces of a mask at most 2R pixels apart share one box (default 0: one box per "
                        "8-connected component), as in detect --box-join")
    p.add_argument("--batch", type=int, default=16, help="samples per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    import torch
    from tqdm import tqdm

    from generators.dfmgan.export import SampleWriter
    from generators.dfmgan.sampler import DFMGANGenerator
    from generators.inpaint.checkpoint import is_painter, read_any_checkpoint

    if args.n is not None and args.n < 1:
        raise InputError(f"--n {args.n}: must be at least 1")
    if args.batch < 1:
        raise InputError(f"--batch {args.batch}: must be at least 1")
    if not 0.0 <= args.truncation <= 1.0:
        raise InputError(f"--truncation {args.truncation}: must be between 0 and 1")
    if args.box_join < 0:
        raise InputError(f"--box-join {args.box_join}: must be 0 or more pixels")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads {args.threads}: must be at least 1")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if is_painter(read_any_checkpoint(args.checkpoint[0])):
        return _generate_inpaint(args, device)
    if args.masks or args.data:
        raise InputError(f"{args.checkpoint[0]}: --masks and --data are for inpaint painter checkpoints")
    if args.n is None:
        raise InputError("--n is required (samples per checkpoint)")
    generator = DFMGANGenerator.from_paths([Path(c) for c in args.checkpoint], device=device,
                                           truncation=args.truncation)
    writer = SampleWriter(Path(args.out), generator.defect_types, args.format, args.box_join)
    rng = torch.Generator(device=device).manual_seed(args.seed)
    with tqdm(total=args.n * len(generator.defect_types), desc="generate", unit="img") as bar:
        for defect_type in generator.defect_types:
            left = args.n
            while left:
                n = min(args.batch, left)
                batch = generator.sample(n, defect_type, rng)
                for i in range(n):
                    writer.add(defect_type, batch.images[i], batch.masks[i], batch.goods[i])
                left -= n
                bar.update(n)
    writer.finish({"checkpoints": [str(Path(c).resolve()) for c in args.checkpoint], "n": args.n,
                   "seed": args.seed, "truncation": args.truncation, "format": args.format, "box_join": args.box_join,
                   "defect_types": generator.defect_types, "info": generator.info})
    print(f"wrote {len(writer.rows)} samples to {args.out}")
    return 0


def _generate_inpaint(args, device) -> int:
    """Paint each defect type into every mask of --masks (or --n deformed base masks) on train/good images."""
    import torch
    from tqdm import tqdm

    from generators.dfmgan.export import SampleWriter
    from generators.inpaint.checkpoint import load_painter_checkpoint
    from generators.inpaint.masks import read_mask_folder
    from generators.inpaint.sampler import InpaintGenerator
    from inspect_train.data.images import load_image_set
    from inspect_train.data.mvtec import scan_category

    if not args.data or not args.category:
        raise InputError("an inpaint painter paints on real train/good images: give --data and --category")
    if (args.masks is None) == (args.n is None):
        raise InputError("inpaint: give either --masks DIR (one image per mask) or --n (deformed base masks)")
    mapping = {}
    for path in args.checkpoint:
        state = load_painter_checkpoint(path)
        if state["defect_type"] in mapping:
            raise InputError(f"{path}: a second painter for defect type '{state['defect_type']}'")
        mapping[state["defect_type"]] = Path(path)
        res = int(state["resolution"])
        trained_on = state.get("category")
        if trained_on and trained_on != args.category:
            raise InputError(f"{path}: painter was trained on category '{trained_on}', not '{args.category}'")
    names, masks = read_mask_folder(args.masks, res) if args.masks else (None, None)
    index = scan_category(args.data, args.category)
    goods = load_image_set(index.train_good, size=(res, res))
    if len(goods) == 0:
        raise InputError(f"{index.folder / 'train' / 'good'}: no images to paint on")
    generator = InpaintGenerator(mapping, goods, None, device)
    writer = SampleWriter(Path(args.out), generator.defect_types, args.format, args.box_join)
    rng = torch.Generator(device=device).manual_seed(args.seed)
    per_type = len(names) if names is not None else args.n
    good_used = []
    with tqdm(total=per_type * len(generator.defect_types), desc="generate", unit="img") as bar:
        for defect_type in generator.defect_types:
            for start in range(0, per_type, args.batch):
                n = min(args.batch, per_type - start)
                if masks is not None:
                    picked = torch.randint(generator.goods.shape[0], (n,), generator=rng, device=rng.device)
                    chunk_goods = generator.goods[picked.to(generator.device)]
                    chunk_masks = masks[start:start + n].to(generator.device)
                    images = generator.paint(chunk_goods, chunk_masks, defect_type, rng)
                    good_used += [generator.good_names[i] for i in picked.tolist()]
                else:
                    batch = generator.sample(n, defect_type, rng)
                    images, chunk_masks, chunk_goods = batch.images, batch.masks, batch.goods
                for i in range(n):
                    writer.add(defect_type, images[i], chunk_masks[i], chunk_goods[i])
                bar.update(n)
    writer.finish({"checkpoints": [str(Path(c).resolve()) for c in args.checkpoint], "generator": "inpaint",
                   "masks": str(Path(args.masks).resolve()) if args.masks else None, "mask_files": names,
                   "good_files": good_used or None, "n": per_type, "seed": args.seed, "format": args.format,
                   "box_join": args.box_join, "data": str(args.data), "category": args.category,
                   "defect_types": generator.defect_types, "info": generator.info})
    print(f"wrote {len(writer.rows)} samples to {args.out}")
    return 0
