"""Steering overhead: one classify training step of a steered arm divided by one step of the same arm unsteered.

Same process, same model (ResNet-34 by default, random init), same generator and batch: `off` is the plain arm,
`types` adds the running per-type losses and the steered type split, `hard k=K` also draws K candidates per kept
synthetic sample and scores them with the current model in a no-grad pass (the runner's own candidate scorer).
Cases alternate in rounds and each reports its fastest step (the figure least disturbed by other jobs).

    python3 benchmarks/steering_overhead.py --threads 1
    python3 benchmarks/steering_overhead.py --resolution 64 --batch-size 16 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
import tempfile

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_line, print_table, resolve_device, synchronize  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--resolution", type=int, default=128, help="training resolution (square)")
    p.add_argument("--model", default="resnet34", help="timm classifier")
    p.add_argument("--batch-size", type=int, default=32, help="images per step, real + synthetic (half synthetic)")
    p.add_argument("--aug", default="crop-paste", help="the generator every case draws from")
    p.add_argument("--candidates", type=int, nargs="+", default=[2, 4], help="K of the hard cases")
    p.add_argument("--rounds", type=int, default=3, help="rounds alternating the cases")
    p.add_argument("--steps", type=int, default=2, help="timed training steps per case and round")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from generators.registry import create_generator
    from inspect_train.data.category import load_category
    from inspect_train.data.toy import write_toy_dataset
    from inspect_train.models.registry import create_classifier
    from inspect_train.online import OnlineBatches, RealPool
    from inspect_train.protocol import get_partition, make_manifest
    from inspect_train.settings import TaskSettings
    from inspect_train.steering import SteerSettings, Steering
    from inspect_train.tasks.classify import TASK as CLASSIFY
    from inspect_train.tasks.runner import candidate_scorer

    print(f"machine: {machine_line(device)}")
    work = Path(tempfile.mkdtemp(prefix="steering-"))
    data = load_category(write_toy_dataset(work / "data", seed=0), "toy", size=(args.resolution, args.resolution))
    part = get_partition(make_manifest(data.index, partitions=1, seed=0), 1)
    base_names = {t: s["base"] for t, s in part["defects"].items()}
    types = sorted(base_names)
    pool = RealPool(data, base_names, types, device)
    generator = create_generator(args.aug, data, base_names, device)
    torch.manual_seed(0)
    model = create_classifier(args.model, len(types), data.channels, None).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_fn = CLASSIFY.step_fn(None, device)
    settings = TaskSettings()

    cases = {"off": (None, None), "types": (SteerSettings("types"), None)}
    for k in args.candidates:
        cases[f"hard k={k}"] = (SteerSettings("hard", candidates=k), candidate_scorer(CLASSIFY, model, settings))
    batches = {}
    for name, (steer, scorer) in cases.items():
        steering = Steering(steer, types, [args.aug]) if steer is not None else None
        batches[name] = OnlineBatches(pool, generator, batch_size=args.batch_size, synthetic_ratio=0.5, seed=0,
                                      device=device, source=args.aug, steering=steering, scorer=scorer)

    def step(online) -> None:
        batch = next(online)
        loss, _, per_row = step_fn(model, batch)
        online.observe(batch, per_row)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(online) -> float:
        synchronize(device)
        start = time.perf_counter()
        step(online)
        synchronize(device)
        return time.perf_counter() - start

    for online in batches.values():
        step(online)  # warm-up
    times = {name: [] for name in batches}
    for _ in range(args.rounds):
        for name, online in batches.items():
            times[name] += [timed(online) for _ in range(args.steps)]
    base = min(times["off"])
    rows = [[name, f"{min(t) * 1e3:.0f}", f"{statistics.median(t) * 1e3:.0f}", f"{min(t) / base:.3f}x"]
            for name, t in times.items()]
    print()
    print(f"{args.model}, {args.resolution}x{args.resolution}, batch {args.batch_size} ({args.batch_size // 2} "
          f"synthetic from {args.aug}), fp32, {device}, {torch.get_num_threads()} thread(s); {args.rounds} rounds x "
          f"{args.steps} steps per case; {load_average()} at the end")
    print_table(["case", "step ms (min)", "step ms (median)", "vs off (min)"], rows)


if __name__ == "__main__":
    main()
