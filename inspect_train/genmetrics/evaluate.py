"""The DFMGAN paper's two numbers for one set of generated samples against the real base set: KID and
clustered LPIPS. They need pretrained Inception-v3 / AlexNet weights, so `metric_networks` builds only
those whose weight files are given or already in the torch hub cache and says in one line why the others
were skipped; the weight-free measures (mask_stats, two_sample, diversity) never depend on them.
"""

from __future__ import annotations

import torch

from inspect_train.genmetrics.clustered_lpips import clustered_lpips
from inspect_train.genmetrics.inception import build_inception
from inspect_train.genmetrics.kid import kid_from_features
from inspect_train.genmetrics.weights import INCEPTION_URL, LPIPS_BACKBONE_URLS, file_name_of, hub_checkpoint_dir

LPIPS_MIN_SIDE = 32  # AlexNet's pooling leaves nothing of smaller images


def _rgb_if_needed(images: torch.Tensor, channels: int) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 and channels == 3 else images


def metric_networks(*, inception_weights: str | None, lpips_backbone_weights: str | None,
                    lpips_lin_weights: str | None, lpips_net: str, random_features: bool, size: tuple[int, int],
                    seed: int, device, batch: int) -> tuple[object | None, object | None, str | None]:
    """(Inception features or None, LPIPS embedder or None, one line on what was skipped and why, or None).
    A weights file named on the command line must exist (InputError otherwise); one in the hub cache is
    used when present; neither is ever downloaded."""
    want_kid = random_features or inception_weights or (hub_checkpoint_dir() / file_name_of(INCEPTION_URL)).is_file()
    lpips_file = hub_checkpoint_dir() / file_name_of(LPIPS_BACKBONE_URLS[lpips_net])
    want_lpips = random_features or lpips_backbone_weights or lpips_file.is_file()
    skipped = []
    if not want_kid:
        skipped.append(f"KID (no Inception-v3 weights: {hub_checkpoint_dir() / file_name_of(INCEPTION_URL)} is absent; "
                       "pass --inception-weights PATH)")
    if not want_lpips:
        skipped.append(f"clustered LPIPS (no {lpips_net} weights: {lpips_file} is absent; pass --lpips-backbone-weights PATH)")
    elif min(size) < LPIPS_MIN_SIDE:
        skipped.append(f"clustered LPIPS (images are {size[0]}x{size[1]}; LPIPS needs at least {LPIPS_MIN_SIDE} pixels a side)")
        want_lpips = False
    inception = embedder = None
    if want_kid:
        inception = build_inception(inception_weights, random_init=random_features, seed=seed, device=device, batch=batch)
    if want_lpips:
        from inspect_train.genmetrics.lpips_net import build_lpips  # heavy optional dependency: only LPIPS needs lpips

        embedder = build_lpips(lpips_net, backbone_weights=lpips_backbone_weights, lin_weights=lpips_lin_weights,
                               random_init=random_features, seed=seed, device=device, batch=batch)
    note = ("skipped " + "; ".join(skipped) + ". The other measures need no weights.") if skipped else None
    return inception, embedder, note


def score_pair(generated: torch.Tensor, real: torch.Tensor, inception, embedder, *, kid_subsets: int = 100,
               kid_max_subset_size: int = 1000, max_per_cluster: int | None = 200, seed: int = 0,
               batch: int = 32) -> dict:
    """{'kid': KidResult dict | None, 'clustered_lpips': ClusteredLpips dict | None} of uint8 generated images
    against uint8 real images of the same size (None where the network is missing or too few real images)."""
    out: dict = {"kid": None, "clustered_lpips": None}
    if real.shape[0] < 2 or generated.shape[0] < 2:
        return out
    if inception is not None:
        kid = kid_from_features(inception(real), inception(generated), subsets=kid_subsets,
                                max_subset_size=kid_max_subset_size, seed=seed)
        out["kid"] = dict(kid.as_dict(), weights=inception.weights)
    if embedder is not None:
        channels = max(generated.shape[1], real.shape[1])
        result = clustered_lpips(_rgb_if_needed(generated, channels), _rgb_if_needed(real, channels), embedder,
                                 batch=batch, max_per_cluster=max_per_cluster, progress=False)
        out["clustered_lpips"] = dict(result.as_dict(), net=embedder.net, weights=embedder.weights)
    return out

