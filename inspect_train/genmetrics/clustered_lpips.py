"""Clustered LPIPS (Ojha et al. 2021, as reported by DFMGAN): diversity that overfitting cannot fake.

Each generated image joins the cluster of its nearest real image (lowest LPIPS;
ties go to the first real image). Inside each cluster the mean LPIPS over all
pairs of members is taken, then the mean over clusters. A generator that copies
its training images gets near-zero clusters; a diverse one gets high values.

Clusters with fewer than 2 members have no pair: they count as 0 in `value` (the
headline number, as DFMGAN's public metric code does, so a generator that covers
few real images is penalised) and are left out of `value_nonempty` (the mean over
clusters with at least 2 members, reported beside it). `max_per_cluster` keeps
only the first members of a cluster (in generation order) to bound time and memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from inspect_train.progress import progress_bar

Embed = Callable[[torch.Tensor], torch.Tensor]  # uint8 images -> (N, D); squared distance = LPIPS


@dataclass
class ClusteredLpips:
    value: float
    value_nonempty: float | None
    n_generated: int
    n_real: int
    cluster_sizes: list[int]  # members assigned (before the cap), one per real image
    cluster_means: list[float | None]  # None where fewer than 2 members
    max_per_cluster: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) squared Euclidean distances, clamped at 0 against rounding."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0)


def mean_pairwise(embeddings: torch.Tensor) -> float:
    """Mean squared distance over the m(m-1)/2 unordered pairs of rows."""
    m = embeddings.shape[0]
    d = squared_distances(embeddings, embeddings)
    upper = torch.triu_indices(m, m, offset=1, device=d.device)
    return float(d[upper[0], upper[1]].double().mean())


def assign_nearest(generated: torch.Tensor, real_embeddings: torch.Tensor, embed: Embed, batch: int, progress: bool) -> torch.Tensor:
    """Index of the nearest real image for each generated image, embedding `batch` images at a time."""
    labels = []
    for start in progress_bar(range(0, generated.shape[0], batch), desc="LPIPS: nearest real", unit="batch", disable=None if progress else True, leave=False):
        e = embed(generated[start:start + batch])
        labels.append(squared_distances(e, real_embeddings).argmin(1).cpu())
    return torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)


def clustered_lpips(
    generated: torch.Tensor,
    real: torch.Tensor,
    embed: Embed,
    *,
    batch: int = 32,
    max_per_cluster: int | None = None,
    progress: bool = True,
) -> ClusteredLpips:
    """Clustered LPIPS of `generated` uint8 images around the `real` uint8 images (same size)."""
    if generated.shape[1:] != real.shape[1:]:
        raise ValueError(f"generated {tuple(generated.shape[1:])} and real {tuple(real.shape[1:])} images differ in shape")
    real_embeddings = torch.cat([embed(real[s:s + batch]) for s in range(0, real.shape[0], batch)])
    labels = assign_nearest(generated, real_embeddings, embed, batch, progress)
    del real_embeddings
    sizes, means = [], []
    for r in progress_bar(range(real.shape[0]), desc="LPIPS: within clusters", unit="cluster", disable=None if progress else True, leave=False):
        members = torch.nonzero(labels == r).flatten()
        sizes.append(int(members.numel()))
        if max_per_cluster:
            members = members[:max_per_cluster]
        if members.numel() < 2:
            means.append(None)
            continue
        chosen = generated[members]
        e = torch.cat([embed(chosen[s:s + batch]) for s in range(0, chosen.shape[0], batch)])
        means.append(mean_pairwise(e))
    filled = [m for m in means if m is not None]
    value = sum(filled) / len(means) if means else float("nan")
    return ClusteredLpips(
        value=float(value),
        value_nonempty=float(sum(filled) / len(filled)) if filled else None,
        n_generated=int(generated.shape[0]),
        n_real=int(real.shape[0]),
        cluster_sizes=sizes,
        cluster_means=means,
        max_per_cluster=max_per_cluster or None,
    )
