"""Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel, averaged over subsets.

The arithmetic is torch-fidelity's (`kid_features_to_metric`): k(x, y) = (x.y / d + 1)^3,
`subsets` random subsets drawn without replacement from each side, mean and std
over subsets. As in StyleGAN2-ADA's KID (which the DFMGAN paper reports), the
subset size is min(1000, n_real, n_generated), since a defect type has only tens
of real images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

from inspect_train.errors import InputError


@dataclass
class KidResult:
    mean: float
    std: float
    subsets: int
    subset_size: int
    n_real: int
    n_generated: int

    def as_dict(self) -> dict:
        out = asdict(self)
        out["x1e3_mean"] = self.mean * 1e3
        out["x1e3_std"] = self.std * 1e3
        return out


def kid_from_features(
    real: torch.Tensor,
    generated: torch.Tensor,
    *,
    subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> KidResult:
    """KID between two (N, D) feature sets; subsets are drawn with numpy RandomState(seed), real side first."""
    if real.dim() != 2 or generated.dim() != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D: {tuple(real.shape)} vs {tuple(generated.shape)}")
    subset_size = min(max_subset_size, real.shape[0], generated.shape[0])
    if subset_size < 2:
        raise InputError(
            f"KID needs at least 2 real and 2 generated images (got {real.shape[0]} real, {generated.shape[0]} generated)"
        )
    if subsets < 1:
        raise InputError(f"--kid-subsets must be at least 1 (got {subsets})")
    out = kid_features_to_metric(
        real.float().cpu(),
        generated.float().cpu(),
        kid_subsets=subsets,
        kid_subset_size=subset_size,
        rng_seed=seed,
        verbose=False,
    )
    return KidResult(
        mean=float(out[KEY_METRIC_KID_MEAN]),
        std=float(out[KEY_METRIC_KID_STD]),
        subsets=subsets,
        subset_size=subset_size,
        n_real=int(real.shape[0]),
        n_generated=int(generated.shape[0]),
    )
