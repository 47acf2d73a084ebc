"""Several generators behind one: each synthetic sample comes from one of them (`--aug crop-paste+perlin`).

How many of a call's samples each generator draws is asked of `counts(defect_type, makers, n)` (equal shares, or
steered by the running training loss per generator and type, see inspect_train.steering); every row of the result
names the generator that drew it in `SyntheticBatch.sources`.
"""

from __future__ import annotations

from typing import Callable

import torch

from generators.base import SyntheticBatch


class MixtureGenerator:
    def __init__(self, parts: dict, counts: Callable[[str, list[str], int], list[int]]):
        self.parts, self.counts = dict(parts), counts
        self.defect_types = sorted({t for g in self.parts.values() for t in g.defect_types})
        self.device = next(iter(self.parts.values())).device

    def makers(self, defect_type: str) -> list[str]:
        return [name for name, g in self.parts.items() if defect_type in g.defect_types]

    def sample(self, n: int, defect_type: str, rng: torch.Generator) -> SyntheticBatch:
        makers = self.makers(defect_type)
        images, masks, goods, sources = [], [], [], []
        for name, count in zip(makers, self.counts(defect_type, makers, n)):
            if count == 0:
                continue
            got = self.parts[name].sample(count, defect_type, rng).to(self.device)
            images.append(got.images)
            masks.append(got.masks)
            goods.append(got.goods)
            sources += [name] * count
        size = max(im.shape[-2:] for im in images)  # parts may paint at their own resolutions
        fit = lambda t, mode: t if t.shape[-2:] == size else torch.nn.functional.interpolate(  # noqa: E731
            t, size=size, mode=mode)
        label = self.defect_types.index(defect_type)
        return SyntheticBatch(
            torch.cat([fit(im, "bilinear") for im in images]), torch.cat([fit(m, "nearest") for m in masks]),
            torch.full((n,), label, dtype=torch.long, device=self.device),
            None if any(g is None for g in goods) else torch.cat([fit(g, "bilinear") for g in goods]),
            sources=sources)
