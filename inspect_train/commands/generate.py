"""`inspect-train generate`: write DFMGAN samples (defect image, 0/255 mask, paired good image) and boxes."""

from __future__ import annotations

from pathlib import Path

from inspect_train.errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="write synthetic defect images, masks, paired good images and boxes")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="stage-2 checkpoint (repeat for several defect types)")
    p.add_argument("--n", type=int, required=True, help="samples per checkpoint (defect type)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi (1 = none; lower = more typical)")
    p.add_argument("--format", choices=("coco", "yolo"), default=None, help="also write detection labels")
    p.add_argument("--batch", type=int, default=16, help="samples per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    import torch
    from tqdm import tqdm

    from generators.dfmgan.export import SampleWriter
    from generators.dfmgan.sampler import DFMGANGenerator

    if args.n < 1:
        raise InputError(f"--n {args.n}: must be at least 1")
    if args.batch < 1:
        raise InputError(f"--batch {args.batch}: must be at least 1")
    if not 0.0 <= args.truncation <= 1.0:
        raise InputError(f"--truncation {args.truncation}: must be between 0 and 1")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads {args.threads}: must be at least 1")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator = DFMGANGenerator.from_paths([Path(c) for c in args.checkpoint], device=device,
                                           truncation=args.truncation)
    writer = SampleWriter(Path(args.out), generator.defect_types, args.format)
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
                   "seed": args.seed, "truncation": args.truncation, "format": args.format,
                   "defect_types": generator.defect_types, "info": generator.info})
    print(f"wrote {len(writer.rows)} samples to {args.out}")
    return 0
