"""Inpaint painter speed: training steps/s (and the minutes the config's step count takes), and the in-loop cost
of drawing a batch relative to one ResNet-34 training step at the same resolution and batch size.

Both in one process: the training figure depends on what else runs on the machine (the load is printed), the
ratio much less (the painter and the ResNet-34 are timed in alternating rounds, minimum of each).

    python3 benchmarks/inpaint_speed.py --config inpaint-128 --train-steps 20 --batch-size 16
    python3 benchmarks/inpaint_speed.py --config inpaint-tiny --train-steps 20 --threads 1
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
    p.add_argument("--config", default="inpaint-128", help="inpaint config (name in configs/ or a YAML path)")
    p.add_argument("--data", help="dataset root (default: the toy dataset, written to a temporary folder)")
    p.add_argument("--category", default="toy")
    p.add_argument("--defect", help="defect type (default: the first)")
    p.add_argument("--train-steps", type=int, default=20, help="timed painter training steps (after 2 warm-up)")
    p.add_argument("--loss", choices=("nsgan", "r3gan"), default=None, help="default: the config's")
    p.add_argument("--model", default="resnet34", help="timm classifier of the in-loop reference step")
    p.add_argument("--batch-size", type=int, default=16, help="images per classifier step and per drawn batch")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the in-loop comparison")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from generators.inpaint.api import build_inpaint_generator, fit_inpaint, load_config
    from inspect_train.data.category import load_category
    from inspect_train.models.registry import create_classifier
    from inspect_train.protocol import get_partition, make_manifest

    config = load_config(args.config)
    res = int(config["resolution"])
    print(f"machine: {machine_line(device)}")
    work = Path(tempfile.mkdtemp(prefix="inpaint-speed-"))
    if args.data:
        root = Path(args.data)
    else:
        from inspect_train.data.toy import write_toy_dataset

        root = write_toy_dataset(work / "data", seed=0)
    data = load_category(root, args.category, size=(res, res))
    part = get_partition(make_manifest(data.index, partitions=1, seed=0), 1)
    defect = args.defect or sorted(part["defects"])[0]
    names = part["defects"][defect]["base"]
    subset = data.defects[defect].select(names)

    # 1. Training: per-step wall time from the trainer's own step callback (checkpoint writes excluded).
    stamps = []
    warmup = 2
    started = time.perf_counter()
    ckpt = fit_inpaint(subset.images, subset.masks, data.train_good.images, defect, work / "painter",
                       config={**config, "train": {**config["train"], "save_every": 10 ** 9, "grid_every": 10 ** 9}},
                       steps=warmup + args.train_steps, loss=args.loss, device=str(device), progress=False,
                       on_step=lambda step: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - started
    per_step = [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])]
    median = statistics.median(per_step)
    total = int(config["train"]["steps"])
    print(f"training: {args.train_steps} steps after {warmup} warm-up, median {median:.3f} s/step, "
          f"min {min(per_step):.3f} ({wall:.0f} s wall incl. set-up); {load_average()}", flush=True)

    # 2. In-loop: drawing a batch (the painter's forward pass, masks included) vs one classifier training step.
    generator = build_inpaint_generator({defect: ckpt}, data.train_good, {defect: subset}, device)
    rng = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    model = create_classifier(args.model, len(part["defects"]), data.channels, None).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(args.batch_size, data.channels, res, res, device=device)
    y = torch.randint(0, len(part["defects"]), (args.batch_size,), device=device)

    def train_step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    half = max(1, args.batch_size // 2)
    cases = {f"{args.model} step (batch {args.batch_size})": train_step,
             f"draw {args.batch_size} (a full batch)": lambda: generator.sample(args.batch_size, defect, rng),
             f"draw {half} (R = 0.5)": lambda: generator.sample(half, defect, rng)}
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
    reference = min(next(iter(times.values())))
    rows = [[name, f"{min(t) * 1e3:.0f}", f"{statistics.median(t) * 1e3:.0f}", f"{min(t) / reference:.2f}x"]
            for name, t in times.items()]
    print()
    print(f"{config['name']} ({res}x{res}), loss {args.loss or config['train'].get('loss', 'nsgan')}, "
          f"train batch {config['train']['batch']}, {device}; {load_average()} at the end")
    print(f"painter training: {1 / median:.2f} steps/s -> {total} steps (the config's) in about "
          f"{total * median / 60:.1f} min; one painter step = {median / reference:.2f} {args.model} steps "
          f"(median over min: the same process, so the machine's load cancels out in part)")
    print_table(["case", "ms (min)", "ms (median)", f"vs {args.model} step (min)"], rows)


if __name__ == "__main__":
    main()
