"""Diffusion painter speed: training seconds per step (and the minutes the config's step count takes), and the
in-loop cost of drawing the synthetic half of a batch relative to one ResNet-34 training step, side by side in
one process.

The goal (issue 32), on the 2-core CPU with one thread: training one defect type at 128x128 in at most 15
minutes, and drawing 16 samples at 128x128 in at most 0.5x of a ResNet-34 training step at 128x128 with batch 32.
The cost of a draw depends on the masks (a painter runs on windows around them, longer ones for long defects),
so every defect type of the category is drawn; the ResNet-34 step and the draws are timed in alternating rounds
(minimum of each), so the machine's load cancels out in part.

    python3 benchmarks/diffusion_speed.py --config diffusion-128 --threads 1 --data ../shared/data --category aitex
    python3 benchmarks/diffusion_speed.py --config diffusion-tiny --threads 1 --train-steps 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_line, print_table, resolve_device, synchronize  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="diffusion-128", help="diffusion config (name in configs/ or a YAML path)")
    p.add_argument("--data", help="dataset root (default: the toy dataset, written to a temporary folder)")
    p.add_argument("--category", default="toy")
    p.add_argument("--defect", help="defect type whose training is timed (default: the first)")
    p.add_argument("--train-steps", type=int, default=20, help="timed training steps (after 2 warm-up)")
    p.add_argument("--sample-steps", type=int, default=None, help="denoising steps per draw (default: the config's)")
    p.add_argument("--model", default="resnet34", help="timm classifier of the in-loop reference step")
    p.add_argument("--batch-size", type=int, default=32, help="images per classifier step; half of it is drawn")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the in-loop comparison")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from generators.diffusion.api import build_diffusion_generator, fit_diffusion, load_config
    from generators.diffusion.networks import build_unet, count_parameters
    from inspect_train.data.category import load_category
    from inspect_train.models.registry import create_classifier
    from inspect_train.protocol import get_partition, make_manifest

    config = load_config(args.config)
    res = int(config["resolution"])
    print(f"machine: {machine_line(device)}")
    work = Path(tempfile.mkdtemp(prefix="diffusion-speed-"))
    if args.data:
        root = Path(args.data)
    else:
        from inspect_train.data.toy import write_toy_dataset

        root = write_toy_dataset(work / "data", seed=0)
    data = load_category(root, args.category, size=(res, res))
    part = get_partition(make_manifest(data.index, partitions=3, seed=0), 1)
    types = sorted(part["defects"])
    defect = args.defect or types[0]
    base = {t: data.defects[t].select(part["defects"][t]["base"]) for t in types}
    quiet = {**config["train"], "save_every": 10 ** 9, "grid_every": 10 ** 9}

    # 1. Training: per-step wall time from the trainer's own step callback (checkpoint writes excluded).
    stamps, warmup = [], 2
    started = time.perf_counter()
    ckpt = fit_diffusion(base[defect].images, base[defect].masks, data.train_good.images, defect, work / defect,
                         config={**config, "train": quiet}, steps=warmup + args.train_steps, device=str(device),
                         progress=False, on_step=lambda step: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - started
    per_step = [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])]
    median = statistics.median(per_step)
    total = int(config["train"]["steps"])
    print(f"training '{defect}': {args.train_steps} steps after {warmup} warm-up, median {median:.3f} s/step, "
          f"min {min(per_step):.3f} ({wall:.0f} s wall incl. set-up); {load_average()}", flush=True)

    # 2. In-loop: drawing half a batch of each defect type (masks included) vs one classifier training step.
    checkpoints = {defect: ckpt}
    for t in types:  # the other types' painters: the draw's cost does not depend on the weights
        if t not in checkpoints:
            checkpoints[t] = fit_diffusion(base[t].images, base[t].masks, data.train_good.images, t, work / t,
                                           config={**config, "train": quiet}, steps=0, device=str(device),
                                           progress=False)
    generator = build_diffusion_generator(checkpoints, data.train_good, base, device, sample_steps=args.sample_steps)
    rng = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    model = create_classifier(args.model, len(types), data.channels, None).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(args.batch_size, data.channels, res, res, device=device)
    y = torch.randint(0, len(types), (args.batch_size,), device=device)

    def train_step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    half = max(1, args.batch_size // 2)
    reference_name = f"{args.model} step (batch {args.batch_size})"
    cases = {reference_name: train_step}
    for t in types:
        cases[f"draw {half} '{t}'"] = lambda t=t: generator.sample(half, t, rng)
    times = {name: [] for name in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, fn in cases.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    reference = min(times[reference_name])
    rows = [[name, f"{min(t) * 1e3:.0f}", f"{statistics.median(t) * 1e3:.0f}", f"{min(t) / reference:.2f}x"]
            for name, t in times.items()]
    draws = [min(t) / reference for name, t in times.items() if name != reference_name]
    unet = build_unet(config, data.channels)
    print()
    print(f"{config['name']} ({res}x{res}, {data.channels} channel(s)), UNet {count_parameters(unet) / 1e6:.2f}M "
          f"parameters, train batch {config['train']['batch']} on {config['train'].get('crop') or res}-px windows, "
          f"sampling {generator.steps} {config['sample'].get('scheduler', 'ddim')} steps on "
          f"{generator.window}-px windows, {device}; {load_average()} at the end")
    print(f"training: {1 / median:.2f} steps/s -> {total} steps (the config's) in about {total * median / 60:.1f} min "
          f"(goal: 15 min); drawing {half}: {min(draws):.2f}x to {max(draws):.2f}x of one {args.model} step, mean "
          f"{statistics.mean(draws):.2f}x over the defect types (goal: at most 0.5x)")
    print_table(["case", "ms (min)", "ms (median)", f"vs {args.model} step (min)"], rows)


if __name__ == "__main__":
    main()
