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

from dfmgan_learning import RandomFeatures, backbone_samples, features, frechet, kid  # noqa: E402

from inspect_train.data.category import load_category  # noqa: E402


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
    torch.set_num_threads(args.threads)
    data = load_category(args.data, args.category, size=(args.resolution, args.resolution))
    net = RandomFeatures(data.channels)
    real = features(net, data.train_good.images[: args.n_eval].float() / 255)  # the benchmark's reference set
    for ckpt in args.checkpoints:
        fds, kids = [], []
        for draw in range(args.draws):
            fake = features(net, backbone_samples(Path(ckpt), args.n_eval, seed=1000 + draw))
            fds.append(frechet(fake, real))
            kids.append(kid(fake, real) * 1e3)
        print(f"{ckpt}: FD {np.mean(fds):.2f} ± {np.std(fds):.2f} [{min(fds):.2f}, {max(fds):.2f}], "
              f"KID x1e3 {np.mean(kids):.2f} ± {np.std(kids):.2f} ({args.draws} draws of {args.n_eval})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
