"""DFMGAN stage-2 sampling speed: (defect image, mask, paired good) triplets per second.

For each config and batch size, in one process: the shipped sampler (`DFMGANGenerator.sample`:
shared layers below the first residual resolution, good and defect branches as one batch,
in-place epilogues, channels_last) and the reference way of the public code (defect + mask in
one pass, then a second full backbone pass for the good image, plain out-of-place ops, NCHW),
from the same latents; and the sampler without the good branch (defect image + mask only, what classify
and U-Net/DeepLabV3 segment draw). Also: FLOPs per triplet (torch.utils.flop_counter), the GFLOP/s reached
against the machine's fp32 matmul rate measured in the same process, and peak memory (each case
runs in its own process, so the peak RSS on CPU is that case's). Weights are random: speed does
not depend on them.

    python3 benchmarks/generator_throughput.py                       # CPU sweep (a few minutes)
    python3 benchmarks/generator_throughput.py --sweep "256:4" --compile
    python3 benchmarks/generator_throughput.py --device cuda --sweep "64:1,4,16,64 128:1,4,16,64 256:1,4,16,64"
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (finish, machine_line, matmul_gflops, peak_memory_mb, precisions_for,  # noqa: E402
                               reset_peak_memory, resolve_device, run_isolated, synchronize, time_per_call)
from generators.dfmgan.checkpoint import save_checkpoint  # noqa: E402
from generators.dfmgan.config import load_config, with_resolution  # noqa: E402
from generators.dfmgan.networks import Generator  # noqa: E402
from generators.dfmgan.sampler import DFMGANGenerator  # noqa: E402

CPU_SWEEP = "64:1,4,16,64 128:1,4,16 256:1,4,16"
GPU_SWEEP = "64:1,4,16,64 128:1,4,16,64 256:1,4,16,64"


def config_for(resolution: int) -> dict:
    """The paper's widths: dfmgan-256 / dfmgan-128 as shipped, 64 = the 128 config one octave down."""
    if resolution in (128, 256):
        return load_config(f"dfmgan-{resolution}")
    return with_resolution(load_config("dfmgan-128"), resolution)


def random_checkpoint(config: dict, channels: int, path: Path, seed: int = 0) -> Path:
    """A stage-2 checkpoint with random weights (speed does not depend on the weights)."""
    torch.manual_seed(seed)
    G = Generator(config, channels)
    G.add_defect_modules()
    state = {"kind": "dfmgan-defect", "config": config, "channels": channels, "resolution": int(config["resolution"]),
             "defect_type": "defect", "step": 0, "G_ema": G.state_dict()}
    return save_checkpoint(state, path)


def reference_triplet(G: Generator, n: int, rng: torch.Generator, device: torch.device):
    """What the public code does: defect + mask in one pass, the good image in a second full pass.

    Grad mode on but nothing requires grad: no graph is recorded, and the network runs its plain
    out-of-place ops (the in-place epilogues are for no-grad only), as a straightforward port would.
    """
    with torch.enable_grad():
        z = torch.randn(n, G.z_dim, generator=rng, device=rng.device).to(device)
        z_def = torch.randn(n, G.z_dim, generator=rng, device=rng.device).to(device)
        noise = G.make_noise(n, device, rng)
        w = G.mapping(z)
        defect, mask, _ = G.synthesize_defect(w, G.defect_mapping(z_def), noise, with_good=False)
        good = G.synthesize(G.mapping(z), noise)
    return defect, mask, good


def run_case(args) -> dict:
    """One (resolution, batch, precision) case; prints one JSON line."""
    torch.set_num_threads(args.threads) if args.threads else None
    device = resolve_device(args.device)
    res, n, precision = args.case_res, args.case_batch, args.case_precision
    config = config_for(res)
    rate = matmul_gflops(device, min_seconds=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = random_checkpoint(config, args.channels, Path(tmp) / "defect.pt")
        gen = DFMGANGenerator({"defect": ckpt}, device=device, compile=args.compile, precision=precision)
    G = gen._nets["defect"]
    rng = torch.Generator(device=device).manual_seed(0) if device.type == "cuda" else torch.Generator().manual_seed(0)
    out = {"resolution": res, "batch": n, "precision": precision + ("+compile" if args.compile else ""),
           "config": config["name"], "res_start": int(config["res_start"]), "matmul_gflops": rate}
    # FLOPs per triplet, counted at batch 1 (they are linear in the batch)
    with FlopCounterMode(display=False) as fc:
        gen.sample(1, "defect", rng)
    out["gflop_per_triplet"] = fc.get_total_flops() / 1e9
    G.channels_last = False
    with FlopCounterMode(display=False) as fc:
        reference_triplet(G, 1, rng, device)
    G.channels_last = True
    out["ref_gflop_per_triplet"] = fc.get_total_flops() / 1e9

    reset_peak_memory(device)
    start = time.perf_counter()
    gen.sample(n, "defect", rng)  # first call: includes compile time when --compile
    synchronize(device)
    out["first_call_s"] = time.perf_counter() - start
    sec = time_per_call(lambda: gen.sample(n, "defect", rng), device, warmup=1 if args.compile else 0,
                        min_seconds=args.min_seconds)
    out["triplets_per_s"] = n / sec
    out["gflops_achieved"] = out["gflop_per_triplet"] * n / sec
    out["peak_mb"] = peak_memory_mb(device)
    gen.paired_good = False  # what classify and U-Net/DeepLabV3 segment draw: defect image + mask only
    out["defect_mask_per_s"] = n / time_per_call(lambda: gen.sample(n, "defect", rng), device,
                                                 warmup=1 if args.compile else 0, min_seconds=args.min_seconds)
    gen.paired_good = True
    if not args.no_reference and precision == "fp32":
        G.channels_last = False
        sec_ref = time_per_call(lambda: reference_triplet(G, n, rng, device), device, warmup=0,
                                min_seconds=args.min_seconds)
        G.channels_last = True
        out["ref_triplets_per_s"] = n / sec_ref
        out["speedup"] = sec_ref / sec
    print(json.dumps(out))
    return out


def parse_sweep(text: str) -> list[tuple[int, list[int]]]:
    out = []
    for item in text.split():
        res, batches = item.split(":")
        out.append((int(res), [int(b) for b in batches.split(",")]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sweep", default=None,
                    help=f'"RES:B1,B2 RES:..." (default CPU "{CPU_SWEEP}", GPU "{GPU_SWEEP}")')
    ap.add_argument("--precisions", default=None, help="comma list of fp32,bf16,fp16 (default: fp32 on CPU; all on GPU)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd sampling (compile time shown)")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="time each case for at least this long")
    ap.add_argument("--no-reference", action="store_true", help="skip the two-pass reference (faster)")
    ap.add_argument("--json", default=None, help="also write all rows to this JSON file")
    ap.add_argument("--case-res", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--case-batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--case-precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case_res:
        run_case(args)
        return 0

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sweep = parse_sweep(args.sweep or (GPU_SWEEP if device.type == "cuda" else CPU_SWEEP))
    print(f"machine: {machine_line(device)}")
    rows, results = [], []
    passthrough = ["--device", str(device), "--channels", str(args.channels), "--min-seconds", str(args.min_seconds)]
    passthrough += ["--threads", str(args.threads)] if args.threads else []
    passthrough += ["--no-reference"] if args.no_reference else []
    variants = [False, True] if args.compile else [False]
    for res, batches in sweep:
        for n in batches:
            for precision in precisions_for(device, args.precisions):
                for compiled in variants:
                    case = passthrough + ["--case-res", str(res), "--case-batch", str(n), "--case-precision", precision]
                    r = run_isolated(__file__, case + (["--compile"] if compiled else []))
                    results.append(r)
                    ref = r.get("ref_triplets_per_s")
                    rows.append([res, n, r["precision"], f"{r['triplets_per_s']:.3g}",
                                 f"{ref:.3g}" if ref else "-", f"{r['speedup']:.2f}x" if ref else "-",
                                 f"{r['gflop_per_triplet']:.1f} / {r['ref_gflop_per_triplet']:.1f}",
                                 f"{r['gflops_achieved']:.0f}", f"{r['matmul_gflops']:.0f}",
                                 f"{100 * r['gflops_achieved'] / r['matmul_gflops']:.0f}%",
                                 f"{r['first_call_s']:.1f}", f"{r['peak_mb']:.0f}", f"{r['defect_mask_per_s']:.3g}"])
                    print(f"  done {res}x{res} batch {n} {r['precision']}: {r['triplets_per_s']:.3g} triplets/s",
                          flush=True)
    return finish(device, ["res", "batch", "precision", "triplets/s", "reference triplets/s", "speedup",
                           "GFLOP/triplet (ours / ref)", "GFLOP/s", "matmul GFLOP/s", "% of matmul", "first call s",
                           "peak MB", "defect + mask only /s"], rows, results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
