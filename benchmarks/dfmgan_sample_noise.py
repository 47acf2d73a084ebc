"""How far does dfmgan_learning.py's stage-1 distance move with the sample seed alone?

The benchmark scores each backbone on one fixed draw of 256 samples (seed 123). Before reading a difference
between two backbones as real, score each on several other draws: this prints FD and KID x1e3 (same random
features, same real train/good images) as mean ± std over --draws sample seeds, per checkpoint.

    python3 benchmarks/dfmgan_sample_noise.py --category aitex /work/bench/after_aitex_s0/stage1/backbone.pt ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from dfmgan_learning import RandomFeatures, backbone_generator, backbone_samples, features, frechet, kid  # noqa: E402

from inspect_train.data.category import load_category  # noqa: E402
from inspect_train.errors import InputError  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="stage-1 backbone.pt files of dfmgan_learning.py runs")
    p.add_argument("--data", default="/work/shared/data")
    p.add_argument("--category", default="aitex")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--draws", type=int, default=5, help="sample seeds 1000, 1001, ...")
    p.add_argument("--n-eval", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.draws < 2 or args.n_eval < 2:
        p.error("--draws and --n-eval must be at least 2 (a spread needs two draws, a covariance two samples)")
    missing = [c for c in args.checkpoints if not Path(c).is_file()]
    if missing:
        p.error(f"no such checkpoint: {missing[0]}")
    torch.set_num_threads(args.threads)
    try:
        data = load_category(args.data, args.category, size=(args.resolution, args.resolution))
    except InputError as err:
        p.error(str(err))
    net = RandomFeatures(data.channels)
    real = features(net, data.train_good.images[: args.n_eval].float() / 255)  # the benchmark's reference set
    for ckpt in args.checkpoints:
        G, fds, kids = backbone_generator(Path(ckpt)), [], []
        for draw in range(args.draws):
            fake = features(net, backbone_samples(G, args.n_eval, seed=1000 + draw))
            fds.append(frechet(fake, real))
            kids.append(kid(fake, real) * 1e3)
        print(f"{ckpt}: FD {np.mean(fds):.2f} ± {np.std(fds):.2f} [{min(fds):.2f}, {max(fds):.2f}], "
              f"KID x1e3 {np.mean(kids):.2f} ± {np.std(kids):.2f} ({args.draws} draws of {args.n_eval})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
