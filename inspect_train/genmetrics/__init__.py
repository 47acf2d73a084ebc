"""Generator quality metrics: KID (realism + diversity) and clustered LPIPS (diversity).

KID uses torch-fidelity's Inception-v3 and its unbiased polynomial-kernel MMD;
LPIPS uses the `lpips` package's networks. Weights are never downloaded here:
they come from an explicit path or the torch hub cache (see `weights.py`).
"""

from inspect_train.genmetrics.clustered_lpips import ClusteredLpips, clustered_lpips
from inspect_train.genmetrics.inception import InceptionFeatures, build_inception
from inspect_train.genmetrics.kid import KidResult, kid_from_features
from inspect_train.genmetrics.lpips_net import LpipsEmbedder, build_lpips

__all__ = [
    "ClusteredLpips",
    "clustered_lpips",
    "InceptionFeatures",
    "build_inception",
    "KidResult",
    "kid_from_features",
    "LpipsEmbedder",
    "build_lpips",
]
