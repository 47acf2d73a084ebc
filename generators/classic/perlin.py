"""DRAEM-style anomalies: a thresholded Perlin-noise mask filled with a foreign texture.

image = (1 - M) * good + M * ((1 - beta) * texture + beta * good), beta ~ U[0, 0.8],
M = perlin > 0.5 at a random lattice scale 2^a x 2^b. DRAEM draws the texture
from an outside texture set; here it comes from `texture="good"` (another
train/good image, flipped/turned), `"self"` (the image itself, flipped/turned)
or `"defect"` (a base-set image of the requested defect type). The mask shape
knows nothing of defect types: with "good"/"self" the label a classifier gets
is arbitrary, which makes Perlin a control for "any anomaly vs this defect".
"""

from __future__ import annotations

import math

import torch

from generators.base import SyntheticBatch
from generators.classic._sources import DeviceSet, check_type, labels
from generators.classic.geometry import random_flip_rot, randint, uniform
from inspect_train.data.images import ImageSet
from inspect_train.errors import InputError

TEXTURES = ("good", "self", "defect")


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_2d(h: int, w: int, res_y: int, res_x: int, rng: torch.Generator) -> torch.Tensor:
    """Gradient noise (H, W) in about [-1, 1] on a res_y x res_x lattice (any H, W)."""
    device = rng.device
    angles = 2 * math.pi * torch.rand(res_y + 1, res_x + 1, generator=rng, device=device)
    grad = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (ry+1, rx+1, 2)
    ys = torch.arange(h, device=device) * (res_y / h)
    xs = torch.arange(w, device=device) * (res_x / w)
    y0, x0 = ys.floor().long(), xs.floor().long()
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = grad[(y0 + dy)[:, None], (x0 + dx)[None, :]]  # (H, W, 2)
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), ux)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), ux)
    return math.sqrt(2) * torch.lerp(top, bottom, uy)


def perlin_masks(n: int, h: int, w: int, rng: torch.Generator, scales=(0, 6), threshold: float = 0.5) -> torch.Tensor:
    """(N, 1, H, W) binary masks, never empty: if noise > threshold marks nothing, the top 3 % is taken."""
    a = randint(n, scales[1], rng, low=scales[0]).tolist()
    b = randint(n, scales[1], rng, low=scales[0]).tolist()
    noise = torch.stack([perlin_2d(h, w, 2**ai, 2**bi, rng) for ai, bi in zip(a, b)])
    top = torch.quantile(noise.flatten(1), 0.97, dim=1).view(-1, 1, 1)
    cut = torch.minimum(torch.full_like(top, threshold), top)
    return (noise >= cut)[:, None].float()


class PerlinGenerator:
    def __init__(
        self,
        goods: ImageSet,
        defect_types: list[str],
        defects: dict[str, ImageSet] | None = None,
        device: str | torch.device = "cpu",
        texture: str = "good",
        beta: tuple[float, float] = (0.0, 0.8),
        scales: tuple[int, int] = (0, 6),
    ):
        if texture not in TEXTURES:
            raise InputError(f"perlin texture '{texture}' is not one of {TEXTURES}")
        if texture == "defect" and not defects:
            raise InputError("perlin with texture 'defect' needs the base-set images of each defect type")
        self.device = torch.device(device)
        self.defect_types = sorted(defect_types)
        self.texture, self.beta = texture, tuple(beta)
        h, w = goods.images.shape[-2:]
        top = max(0, int(math.log2(max(1, min(h, w) // 4))))
        self.scales = (min(scales[0], top), min(scales[1], top))  # a lattice cell is at least 4 pixels, as DRAEM at 256
        self.goods = DeviceSet.from_image_set(goods, self.device, "train/good")
        self.defects = {}
        if texture == "defect":
            self.defects = {t: DeviceSet.from_image_set(defects[t], self.device, f"base set of '{t}'") for t in self.defect_types}
        self.source_names = {t: list(s.names) for t, s in self.defects.items()}

    def sample(self, n: int, defect_type: str, rng: torch.Generator) -> SyntheticBatch:
        index = check_type(self, defect_type)
        good = self.goods.images[self.goods.draw(n, rng)]
        if self.texture == "good":
            texture = self.goods.images[self.goods.draw(n, rng)]
        elif self.texture == "self":
            texture = good
        else:
            source = self.defects[defect_type]
            texture = source.images[source.draw(n, rng)]
        texture = random_flip_rot(texture, rng)
        h, w = good.shape[-2:]
        mask = perlin_masks(n, h, w, rng, self.scales).to(self.device)
        beta = uniform(n, rng, *self.beta).view(-1, 1, 1, 1).to(self.device)
        image = (1 - mask) * good + mask * ((1 - beta) * texture + beta * good)
        return SyntheticBatch(image, mask, labels(n, index, self.device), good)
