"""In-loop overhead: one classify training step with fresh synthetic defects divided by one real-only step.

Same process, same model (ResNet-34 by default, random init), same batch size B: `none` fills the batch with
real images, `crop-paste` and `dfmgan` draw round(R * B) of it fresh from the generator every step (the
classify task's own OnlineBatches and loss), so the ratio is the whole cost of fresh samples. The DFMGAN
generator has random weights (stage 1 and 2 checkpoints with 0 steps): sampling costs the same as a trained one.

    python3 benchmarks/inloop_overhead.py --resolution 64 --gan-config dfmgan-tiny --batch-size 16
    python3 benchmarks/inloop_overhead.py --resolution 256 --gan-config dfmgan-256 --batch-size 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (load_average, machine_line, peak_memory_mb, print_table,  # noqa: E402
                               reset_peak_memory, resolve_device, synchronize)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--resolution", type=int, default=64, help="training and generator resolution (square)")
    p.add_argument("--gan-config", default="dfmgan-tiny",
                   help="DFMGAN config; its resolution is set to --resolution when they differ")
    p.add_argument("--model", default="resnet34", help="timm classifier")
    p.add_argument("--batch-size", type=int, default=16, help="images per step, real + synthetic")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75], help="synthetic ratios R")
    p.add_argument("--augs", nargs="+", default=["crop-paste", "dfmgan"], help="generators to compare with none")
    p.add_argument("--rounds", type=int, default=3, help="rounds alternating the cases")
    p.add_argument("--steps", type=int, default=2, help="timed training steps per case and round")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return p.parse_args(argv)


def build_generators(augs, data, base_names, gan_config, resolution, device, work: Path) -> dict:
    from generators.registry import create_generator
    from generators.dfmgan.api import fit_backbone, fit_defect, load_config

    made = {}
    for aug in augs:
        if aug != "dfmgan":
            made[aug] = create_generator(aug, data, base_names, device)
            continue
        config = load_config(gan_config)
        if int(config["resolution"]) != resolution:
            print(f"{gan_config}: resolution {config['resolution']} -> {resolution}")
            config["resolution"] = resolution
        backbone = fit_backbone(data.train_good.images, config, work / "backbone", steps=0, device=str(device),
                                progress=False)
        checkpoints = {}
        for defect, names in base_names.items():
            subset = data.defects[defect].select(names)
            checkpoints[defect] = fit_defect(backbone, subset.images, subset.masks, defect, work / defect,
                                             config=config, steps=0, device=str(device), progress=False)
        made[aug] = create_generator("dfmgan", data, base_names, device, checkpoints=checkpoints,
                                   paired_good=False)  # as classify builds it
    return made


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from inspect_train.data.category import load_category
    from inspect_train.data.toy import write_toy_dataset
    from inspect_train.models.registry import create_classifier
    from inspect_train.online import OnlineBatches, RealPool
    from inspect_train.protocol import get_partition, make_manifest
    from inspect_train.tasks.classify import TASK as CLASSIFY

    print(f"machine: {machine_line(device)}")
    work = Path(tempfile.mkdtemp(prefix="inloop-"))
    root = write_toy_dataset(work / "data", seed=0)
    data = load_category(root, "toy", size=(args.resolution, args.resolution))
    part = get_partition(make_manifest(data.index, partitions=1, seed=0), 1)
    base_names = {t: s["base"] for t, s in part["defects"].items()}
    class_names = sorted(base_names)
    generators = build_generators(args.augs, data, base_names, args.gan_config, args.resolution, device, work / "gan")
    pool = RealPool(data, base_names, class_names, device)

    torch.manual_seed(0)
    model = create_classifier(args.model, len(class_names), data.channels, None).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    classify_step = CLASSIFY.step_fn(None, device)  # the classify task's own loss step

    def step(batches) -> None:
        loss, *_ = classify_step(model, next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(fn) -> float:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start

    # Rounds that alternate none / crop-paste / dfmgan, a few steps each, and the minimum per case: on a
    # machine shared with other jobs the minimum is the figure least disturbed by them.
    rows, measured = [], []
    for ratio in args.ratios:
        cases = {}
        for aug in ["none", *args.augs]:
            cases[aug] = OnlineBatches(pool, generators.get(aug), batch_size=args.batch_size,
                                       synthetic_ratio=ratio if aug != "none" else 0.0, seed=0, device=device)
            step(cases[aug])  # warm-up
        steps = {aug: [] for aug in cases}
        fetches = {aug: [] for aug in cases}
        peaks = {}
        for _ in range(args.rounds):
            for aug, batches in cases.items():
                reset_peak_memory(device)
                for _ in range(args.steps):
                    steps[aug].append(timed(lambda: step(batches)))
                fetches[aug].append(timed(lambda: next(batches)))
                peaks[aug] = max(peaks.get(aug, 0.0), peak_memory_mb(device))
        for aug in cases:
            best, median = min(steps[aug]), statistics.median(steps[aug])
            measured.append((ratio, f"{cases[aug].n_synthetic}/{args.batch_size}", aug, best, median,
                             min(fetches[aug]), peaks[aug]))
            print(f"R={ratio} {aug}: min {best * 1e3:.0f} ms/step, median {median * 1e3:.0f}", flush=True)
    # `none` does the same work at every R: its best step over all rounds of all ratios is the reference.
    base = min(m[3] for m in measured if m[2] == "none")
    for ratio, share, aug, best, median, fetch, peak in measured:
        rows.append([ratio, share, aug, f"{best * 1e3:.0f}", f"{median * 1e3:.0f}", f"{fetch * 1e3:.1f}",
                     f"{best / base:.2f}x", f"{peak:.0f}"])
    print()
    print(f"{args.model}, {args.resolution}x{args.resolution}, batch {args.batch_size}, DFMGAN config "
          f"{args.gan_config}, fp32, {device}; {load_average()} at the end")
    memory = "peak GPU memory allocated in the case" if device.type == "cuda" else "process peak RSS so far"
    print_table(["R", "synthetic/batch", "aug", "step ms (min)", "step ms (median)", "batch ms (min)",
                 "vs none (min)", f"peak MB ({memory})"], rows)


if __name__ == "__main__":
    main()
