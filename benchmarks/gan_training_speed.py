"""DFMGAN training speed: real images per second seen by D, stage 1 and stage 2, with peak memory.

Each case (config, stage) runs in its own process (peak RSS on CPU is then that case's; on a GPU,
max_memory_allocated). Random uint8 images stand in for data: speed does not depend on content.
The clock runs from the end of the first (warm-up) step to the end of the last, through the real
training loop (`train_backbone` / `train_defect`), so network building and checkpoint writing
are not counted. R1 runs every `r1_interval` steps (16 at 128/256); the warm-up step 0 is an R1
step, so the timed steps are plain ones unless --r1 is given (then every timed step has R1).

    python3 benchmarks/gan_training_speed.py                     # CPU: 128 and 256, batch 4, 2 timed steps
    python3 benchmarks/gan_training_speed.py --device cuda --batch 0 --steps 20   # GPU: the configs' batch
    python3 benchmarks/gan_training_speed.py --device cuda --batch 0 --steps 20 --precisions fp32,bf16

--precisions runs every case once per stage precision (the stage config's `precision`: auto, fp32, bf16) and adds
each one's speed as a ratio to the first precision's on the same case, in the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (finish, machine_line, peak_memory_mb, reset_peak_memory, resolve_device,  # noqa: E402
                               run_isolated, synchronize)
from generators.dfmgan.config import load_config  # noqa: E402
from generators.dfmgan.training import PRECISIONS  # noqa: E402
from generators.dfmgan.train_backbone import train_backbone  # noqa: E402
from generators.dfmgan.train_defect import train_defect  # noqa: E402


def run_case(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = load_config(args.case_config)
    stage_key = "stage1" if args.case_stage == 1 else "stage2"
    for key in ("stage1", "stage2"):
        config[key] = dict(config[key])
        if args.batch:
            config[key]["batch"] = args.batch
        if args.r1:
            config[key]["r1_interval"] = 1
        config[key]["precision"] = args.case_precision
    batch = int(config[stage_key]["batch"])
    res, ch = int(config["resolution"]), args.channels
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (max(batch, 8), ch, res, res), dtype=torch.uint8, generator=gen)
    masks = torch.rand(images.shape[0], 1, res, res, generator=gen) > 0.9
    stamps: list[float] = []

    def on_step(step):
        synchronize(device)
        stamps.append(time.perf_counter())

    steps = 1 + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        if args.case_stage == 1:
            reset_peak_memory(device)
            train_backbone(images, config, Path(tmp), steps=steps, device=str(device), progress=False, on_step=on_step)
        else:
            backbone = train_backbone(images, config, Path(tmp), steps=0, device=str(device), progress=False)
            reset_peak_memory(device)
            train_defect(backbone, images, masks, "defect", Path(tmp), config=config, steps=steps,
                         device=str(device), progress=False, on_step=on_step)
    seconds = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    out = {"config": config["name"], "stage": args.case_stage, "precision": args.case_precision, "batch": batch,
           "resolution": res,
           "s_per_step": seconds, "images_per_s": batch / seconds,
           "peak_mb": peak_memory_mb(device), "r1_every_step": bool(args.r1), "threads": torch.get_num_threads()}
    print(json.dumps(out))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--configs", default="dfmgan-128,dfmgan-256")
    ap.add_argument("--stages", default="1,2")
    ap.add_argument("--batch", type=int, default=4,
                    help="global batch per step (0 = the config's: 16); small on CPU so a step takes seconds")
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--r1", action="store_true", help="R1 on every step (the worst case)")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precisions", default="auto",
                    help="comma list of stage precisions to time, each case once per precision: auto (bf16 "
                         "autocast on CUDA, fp32 on CPU), fp32, bf16; speeds are shown as a ratio to the first")
    ap.add_argument("--json", default=None)
    ap.add_argument("--case-config", help=argparse.SUPPRESS)
    ap.add_argument("--case-precision", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--case-stage", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 1:
        raise SystemExit("--steps must be at least 1")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        raise SystemExit(f"--precisions {args.precisions}: choose from {', '.join(PRECISIONS)}")
    if args.case_config:
        run_case(args)
        return 0
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_line(device)}")
    common = ["--device", str(device), "--batch", str(args.batch), "--steps", str(args.steps),
              "--channels", str(args.channels)] + (["--r1"] if args.r1 else [])
    common += ["--threads", str(args.threads)] if args.threads else []
    rows, results = [], []
    for name in args.configs.split(","):
        for stage in (int(s) for s in args.stages.split(",")):
            first = None
            for precision in precisions:
                r = run_isolated(__file__, common + ["--case-config", name, "--case-stage", str(stage),
                                                     "--case-precision", precision])
                first = first or r
                results.append(r)
                rows.append([r["config"], r["stage"], precision, r["batch"], f"{r['s_per_step']:.2f}",
                             f"{r['images_per_s']:.3g}", f"{r['images_per_s'] / first['images_per_s']:.2f}",
                             f"{r['peak_mb']:.0f}"])
                print(f"  done {name} stage {stage} {precision}: {r['images_per_s']:.3g} images/s", flush=True)
    return finish(device, ["config", "stage", "precision", "batch", "s/step", "real images/s seen by D",
                           f"speed / {precisions[0]}", "peak MB (GPU allocated / CPU RSS)"], rows, results,
                  args.json)


if __name__ == "__main__":
    raise SystemExit(main())
