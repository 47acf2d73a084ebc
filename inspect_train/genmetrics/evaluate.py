"""Score one set of generated defect images against real ones: KID and clustered LPIPS in one pass.

Generated images arrive as a stream of uint8 batches (a folder or a generator):
Inception features are taken for the first `n_kid`, and the first `n_lpips` are
kept for clustered LPIPS, so 5,000 images never sit in memory at once.
"""

from __future__ import annotations

from typing import Iterable

import torch

from inspect_train.errors import InputError
from inspect_train.genmetrics.clustered_lpips import clustered_lpips
from inspect_train.genmetrics.inception import InceptionFeatures
from inspect_train.genmetrics.kid import kid_from_features
from inspect_train.genmetrics.lpips_net import LpipsEmbedder
from inspect_train.progress import progress_bar


def _rgb_if_needed(images: torch.Tensor, channels: int) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 and channels == 3 else images


def score(
    batches: Iterable[torch.Tensor],
    real: torch.Tensor,
    inception: InceptionFeatures,
    embedder: LpipsEmbedder,
    *,
    n_kid: int,
    n_lpips: int,
    kid_subsets: int = 100,
    kid_max_subset_size: int = 1000,
    max_per_cluster: int | None = None,
    seed: int = 0,
    batch: int = 32,
    progress: bool = True,
    total: int | None = None,
) -> dict:
    """{'kid': KidResult dict, 'clustered_lpips': ClusteredLpips dict} for the streamed generated images."""
    if real.shape[0] < 2:
        raise InputError(f"need at least 2 real images to score against (got {real.shape[0]})")
    real_features = inception(real)
    features, kept, seen = [], [], 0
    bar = progress_bar(batches, desc="generated images: Inception", unit="batch", total=total, disable=None if progress else True)
    for images in bar:
        if images.shape[2:] != real.shape[2:]:
            raise InputError(f"generated images are {tuple(images.shape[2:])}, real ones were resized to {tuple(real.shape[2:])}")
        take_kid = max(0, min(images.shape[0], n_kid - seen))
        take_lpips = max(0, min(images.shape[0], n_lpips - seen))
        if take_kid:
            features.append(inception(images[:take_kid]))
        if take_lpips:
            kept.append(images[:take_lpips])
        seen += images.shape[0]
        if seen >= max(n_kid, n_lpips):
            break
    if not features:
        raise InputError("no generated images to score")
    kid = kid_from_features(real_features, torch.cat(features), subsets=kid_subsets,
                            max_subset_size=kid_max_subset_size, seed=seed)
    generated = torch.cat(kept)
    channels = max(generated.shape[1], real.shape[1])
    lpips_result = clustered_lpips(_rgb_if_needed(generated, channels), _rgb_if_needed(real, channels), embedder,
                                   batch=batch, max_per_cluster=max_per_cluster, progress=progress)
    return {"kid": kid.as_dict(), "clustered_lpips": lpips_result.as_dict()}
