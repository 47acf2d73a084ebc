"""Does DFMGAN really learn? Train both stages at a small CPU config and print a distance that should fall.

Distance: Frechet distance (FD) and KID (x1e3) between generated and real images on the features of a
FIXED, randomly initialised conv net (no pretrained weights are available offline, so this is a
"random-feature" FD/KID: it is comparable only within this script, not with published FID/KID).

  stage 1: generated good images vs real train/good, at step 0 and after training (and in between)
  stage 2: for each --defects type on that backbone: KID of generated defect images vs every real image of
           the type (it trains on the partition's base set only), and evaluate-gen's mask statistics of
           generated vs real masks (area, border fraction, elongation, direction, components, empty) with
           their distance (0 = same distributions, about 2 = no overlap)

It can also measure training speed (real images per second seen by D) and saves sample grids (defect | mask
overlay | paired good) at the start and the end of each stage 2, the backbone's samples and the real base
images to --images, named with --tag (e.g. before / after) and the seed.

    python3 benchmarks/dfmgan_learning.py --data /work/shared/data --category aitex --defects broken_pick nep \
        --steps1 1500 --steps2 600 --evals 3 --speed-steps 0 --seed 0 --tag after
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy import linalg
from torch import nn
from torchvision.utils import save_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generators.dfmgan.api import DFMGANGenerator, fit_backbone, fit_defect, load_config  # noqa: E402
from generators.dfmgan.checkpoint import load_checkpoint  # noqa: E402
from generators.dfmgan.grids import image_grid, overlay, to_unit, triplet_grid  # noqa: E402
from generators.dfmgan.networks import Generator  # noqa: E402
from inspect_train.data.category import load_category  # noqa: E402
from inspect_train.genmetrics.mask_stats import mask_distance, mask_features, summarize  # noqa: E402
from inspect_train.protocol import get_partition, make_manifest  # noqa: E402


def small_config(resolution: int) -> dict:
    """A CPU-sized config: the tiny recipe, wider, at the benchmark resolution (residual start at res/4)."""
    cfg = copy.deepcopy(load_config("dfmgan-tiny"))
    cfg.update({"name": f"bench-{resolution}", "resolution": resolution, "res_start": max(8, resolution // 4),
                "z_dim": 64, "w_dim": 64, "channel_base": 32 * resolution, "channel_max": 64,
                "d_channel_base": 32 * resolution, "d_channel_max": 64,
                "dmatch_channel_base": 8 * resolution, "dmatch_channel_max": 16})
    for stage in ("stage1", "stage2"):
        # R1 by the reference's rule as a number (0.0002 * res^2 / batch), which code before `r1_gamma: auto` reads too
        cfg[stage].update({"batch": 8, "r1_gamma": 0.0002 * resolution ** 2 / 8, "save_every": 10 ** 9,
                           "log_every": 50, "grid_every": 10 ** 9, "ema_kimg": 2.0})
    if "ada_kimg" in cfg["stage1"]:  # the dfmgan-64 schedule's ADA speed (the tiny preset's is for 32 px runs)
        cfg["stage1"]["ada_kimg"], cfg["stage2"]["ada_kimg"] = 10, 2
    return cfg


class RandomFeatures(nn.Module):
    """A fixed random conv net (seeded) whose pooled activations serve as image features."""

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        widths = [channels, 32, 64, 128, 128]
        self.convs = nn.ModuleList()
        for a, b in zip(widths, widths[1:]):
            conv = nn.Conv2d(a, b, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2 / (a * 9)) ** 0.5)
                conv.bias.zero_()
            self.convs.append(conv)

    @torch.no_grad()
    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        x, feats = x01 * 2 - 1, []
        for conv in self.convs:
            x = torch.relu(conv(x))
            feats.append(torch.cat([x.mean((2, 3)), x.std((2, 3))], 1))
            x = nn.functional.avg_pool2d(x, 2)
        return torch.cat(feats[1:], 1).double()


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (as in KID), on all samples."""
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    m, n = len(a), len(b)
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def features(net: RandomFeatures, images01: torch.Tensor, batch: int = 128) -> np.ndarray:
    return torch.cat([net(images01[i:i + batch]) for i in range(0, len(images01), batch)]).numpy()


@torch.no_grad()
def backbone_generator(ckpt: Path) -> Generator:
    """The stage-1 checkpoint's EMA generator, ready to sample."""
    state = load_checkpoint(ckpt)
    G = Generator(state["config"], state["channels"]).eval()
    G.load_state_dict(state["G_ema"])
    return G


def backbone_samples(ckpt: Path | Generator, n: int, seed: int = 123) -> torch.Tensor:
    G = ckpt if isinstance(ckpt, Generator) else backbone_generator(ckpt)
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=rng)
    return ((G.synthesize(G.mapping(z), G.make_noise(n, "cpu", rng)).clamp(-1, 1) + 1) / 2)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def speed(config: dict, images: torch.Tensor, work: Path, steps: int) -> float:
    """Real images per second seen by D in stage 1 (one G step + one D step per training step)."""
    fit_backbone(images, config, work, steps=2, progress=False)  # warm-up and first checkpoint
    _, seconds = timed(lambda: fit_backbone(images, config, work, steps=2 + steps, resume=True, progress=False))
    return steps * int(config["stage1"]["batch"]) / seconds


MASK_COLUMNS = ("area_median", "border_fraction", "elongation_median", "orientation_abs_median_deg",
                "components_mean", "empty_fraction")


def mask_report(generated: torch.Tensor, real: torch.Tensor) -> dict:
    """Shape statistics of generated vs real masks (evaluate-gen's: area, border fraction, elongation, direction)
    and their distance (0 = the same distributions, about 2 = no overlap)."""
    gen_f, real_f = mask_features(generated), mask_features(real)
    gen_s, real_s = summarize(gen_f), summarize(real_f)
    rounded = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
    return {"generated": {k: rounded(gen_s.get(k)) for k in MASK_COLUMNS},
            "real": {k: rounded(real_s.get(k)) for k in MASK_COLUMNS},
            "mask_distance": rounded(mask_distance(real_f, gen_f)["value"])}


def overrides(pairs: list[str]) -> dict:
    """--set KEY=VALUE (YAML value) for config keys, e.g. a stage-2 network option; KEY may be dotted
    (stage2.empty_mask_limit=0.25) to set one key inside a stage."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def apply_overrides(cfg: dict, values: dict) -> dict:
    for key, value in values.items():
        *parents, leaf = key.split(".")
        target = cfg
        for name in parents:
            target = target.setdefault(name, {})
        target[leaf] = value
    return cfg


def save_defect_grid(ckpt: Path, defect: str, path: Path) -> None:
    batch = DFMGANGenerator({defect: ckpt}).sample(8, defect, torch.Generator().manual_seed(11))
    logits = batch.masks * 2 - 1  # binary mask -> the >= 0 convention triplet_grid expects
    save_image(triplet_grid(batch.images * 2 - 1, logits, batch.goods * 2 - 1), path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/work/shared/data")
    p.add_argument("--category", default="aitex")
    p.add_argument("--defects", "--defect", nargs="+", default=["broken_pick"], help="stage 2 for each, on one backbone")
    p.add_argument("--partition", type=int, default=1)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="training seed of both stages")
    p.add_argument("--steps1", type=int, default=400)
    p.add_argument("--steps2", type=int, default=150)
    p.add_argument("--evals", type=int, default=4, help="evaluations after step 0, in each stage")
    p.add_argument("--n-eval", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--speed-steps", type=int, default=20, help="0 to skip the speed measurement")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML value), e.g. mask_refine=true or stage2.empty_mask_limit=0.25")
    p.add_argument("--backbone", default=None, help="reuse this stage-1 checkpoint instead of training one")
    p.add_argument("--tag", default="", help="prefix of the grid files, e.g. before / after")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--images", default=str(ROOT / "docs" / "images"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.out or tempfile.mkdtemp(prefix="dfmgan_bench_"))
    res = args.resolution
    cfg = small_config(res)
    apply_overrides(cfg, overrides(args.overrides))
    data = load_category(args.data, args.category, size=(res, res))
    part = get_partition(make_manifest(data.index, partitions=3, seed=0), args.partition)
    good = data.train_good.images
    report = {"config": cfg["name"], "overrides": overrides(args.overrides), "category": args.category,
              "resolution": res, "seed": args.seed, "threads": args.threads, "train_good": len(good),
              "steps1": args.steps1, "steps2": args.steps2}
    images = Path(args.images)
    images.mkdir(parents=True, exist_ok=True)
    tag = f"{args.tag}_" if args.tag else ""

    if args.speed_steps:
        report["speed_img_per_s"] = {
            "tiny_32": round(speed(load_config("dfmgan-tiny"), load_category(args.data, args.category, size=(32, 32))
                                   .train_good.images, work / "speed_tiny", args.speed_steps), 1),
            f"bench_{res}": round(speed(cfg, good, work / "speed_bench", args.speed_steps), 1),
        }
        print("training speed (real images/s seen by D, stage 1):", report["speed_img_per_s"], flush=True)

    net = RandomFeatures(data.channels)
    if args.backbone:
        bb = Path(args.backbone)
        report["backbone"] = str(bb)
    else:
        real_good = features(net, good[: args.n_eval].float() / 255)
        stage1 = work / "stage1"
        bb = fit_backbone(good, cfg, stage1, steps=0, seed=args.seed, progress=False)
        curve = []

        def evaluate(step: int, seconds: float) -> None:
            fake = features(net, backbone_samples(bb, args.n_eval))
            curve.append({"step": step, "FD": round(frechet(fake, real_good), 3),
                          "KIDx1e3": round(kid(fake, real_good) * 1e3, 3), "train_s": round(seconds, 1)})
            print("stage 1", curve[-1], flush=True)

        evaluate(0, 0.0)
        spent = 0.0
        for k in range(1, args.evals + 1):
            target = args.steps1 * k // args.evals
            _, seconds = timed(lambda: fit_backbone(good, cfg, stage1, steps=target, seed=args.seed, resume=True,
                                                    progress=True))
            spent += seconds
            evaluate(target, spent)
        report["stage1"] = curve
        save_image(image_grid(backbone_samples(bb, 16) * 2 - 1, nrow=8),
                   images / f"dfmgan_{tag}{args.category}_s{args.seed}_backbone.png")

    # Stage 2 is measured against every real image of the defect type: the 3-ish base images it trained on
    # are too few for a feature statistic; the held-out ones are only measured against, never trained on.
    report["stage2"] = {}
    for defect in args.defects:
        base = data.defects[defect].select(part["defects"][defect]["base"])
        every = data.defects[defect]
        real_defect = features(net, every.images.float() / 255)

        def defect_eval(ckpt: Path, step: int) -> dict:
            batch = DFMGANGenerator({defect: ckpt}).sample(args.n_eval, defect, torch.Generator().manual_seed(7))
            row = {"step": step, "KIDx1e3": round(kid(features(net, batch.images), real_defect) * 1e3, 3),
                   **mask_report(batch.masks, every.masks)}
            print(f"stage 2 {defect}", json.dumps(row), flush=True)
            return row

        stage2 = work / f"stage2_{defect}"
        start = fit_defect(bb, base.images, base.masks, defect, stage2, config=cfg, steps=0, seed=args.seed,
                           progress=False)
        rows = [defect_eval(start, 0)]
        save_defect_grid(start, defect, images / f"dfmgan_{tag}{defect}_s{args.seed}_start.png")
        spent = 0.0
        for k in range(1, args.evals + 1):
            target = args.steps2 * k // args.evals
            end, seconds = timed(lambda: fit_defect(bb, base.images, base.masks, defect, stage2, config=cfg,
                                                    steps=target, seed=args.seed, resume=True, progress=True))
            spent += seconds
            rows.append(defect_eval(end, target))
            rows[-1]["train_s"] = round(spent, 1)
        save_defect_grid(end, defect, images / f"dfmgan_{tag}{defect}_s{args.seed}_end.png")
        reals = to_unit(base.images[:8].float() / 127.5 - 1)
        save_image(image_grid(torch.cat([reals * 2 - 1, overlay(reals, base.masks[:8]) * 2 - 1]), nrow=len(reals)),
                   images / f"dfmgan_real_{defect}.png")
        report["stage2"][defect] = {"base_images": len(base), "real_defect_images": len(every), "curve": rows}
    print(json.dumps(report, indent=1))
    (work / "report.json").write_text(json.dumps(report, indent=1))
    print(f"grids in {images}, work folder {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
