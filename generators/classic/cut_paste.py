"""Cut-paste (Li et al. 2021): a patch of a good image, pasted elsewhere on the same image.

The pasted region is the mask. Its shape is either a random rectangle
(`shape="rect"`, the paper's CutPaste; area 2-15 % of the image, aspect
0.3-3.3) or a base-set mask of the requested defect type moved to a random
place (`shape="mask"`, the default). Cut-paste knows nothing of defect
appearance, so with `rect` every defect type gets the same kind of sample and
a classifier's label for it is arbitrary (a control, or for segmentation);
`mask` at least gives each type its own defect shapes. The patch's
brightness is jittered by up to +-`jitter`.
"""

from __future__ import annotations

import torch

from generators.base import SyntheticBatch
from generators.classic._sources import DeviceSet, check_type, labels
from generators.classic.geometry import random_flip_rot, randint, shift, shift_inside, uniform
from inspect_train.data.images import ImageSet
from inspect_train.errors import InputError

SHAPES = ("mask", "rect")


def random_rectangles(n: int, h: int, w: int, rng: torch.Generator, area=(0.02, 0.15), aspect=(0.3, 3.3)):
    """Binary (N, 1, H, W) masks of axis-aligned rectangles with random area ratio and log-uniform aspect."""
    areas = uniform(n, rng, *area) * h * w
    log_aspect = uniform(n, rng, float(torch.tensor(aspect[0]).log()), float(torch.tensor(aspect[1]).log()))
    ratio = log_aspect.exp()
    ph = (areas * ratio).sqrt().round().clamp(1, h).long()
    pw = (areas / ratio).sqrt().round().clamp(1, w).long()
    y0 = randint(n, h - ph, rng)
    x0 = randint(n, w - pw, rng)
    yy = torch.arange(h, device=rng.device)[None, :, None]
    xx = torch.arange(w, device=rng.device)[None, None, :]
    inside = (yy >= y0[:, None, None]) & (yy < (y0 + ph)[:, None, None])
    inside = inside & (xx >= x0[:, None, None]) & (xx < (x0 + pw)[:, None, None])
    return inside[:, None].float()


class CutPasteGenerator:
    def __init__(
        self,
        goods: ImageSet,
        defect_types: list[str],
        shapes: dict[str, ImageSet] | None = None,
        device: str | torch.device = "cpu",
        shape: str = "mask",
        jitter: float = 0.1,
    ):
        if shape not in SHAPES:
            raise InputError(f"cut-paste shape '{shape}' is not one of {SHAPES}")
        if shape == "mask" and not shapes:
            raise InputError("cut-paste with shape 'mask' needs the base-set masks of each defect type")
        self.device = torch.device(device)
        self.defect_types = sorted(defect_types)
        self.shape = shape
        self.jitter = float(jitter)
        self.goods = DeviceSet.from_image_set(goods, self.device, "train/good")
        self.shapes = {}
        if shape == "mask":
            self.shapes = {t: DeviceSet.from_image_set(shapes[t], self.device, f"base set of '{t}'") for t in self.defect_types}
        self.source_names = {t: list(s.names) for t, s in self.shapes.items()}

    def _masks(self, n: int, defect_type: str, rng: torch.Generator) -> torch.Tensor:
        h, w = self.goods.images.shape[-2:]
        if self.shape == "rect":
            return random_rectangles(n, h, w, rng).to(self.device)
        source = self.shapes[defect_type]
        mask = random_flip_rot(source.masks[source.draw(n, rng)], rng)
        return shift_inside(mask, mask, rng)

    def sample(self, n: int, defect_type: str, rng: torch.Generator) -> SyntheticBatch:
        index = check_type(self, defect_type)
        good = self.goods.images[self.goods.draw(n, rng)]
        mask = self._masks(n, defect_type, rng)
        h, w = good.shape[-2:]
        # Patch content comes from elsewhere in the same image: shift by at least an eighth of each side.
        dy = randint(n, h - max(1, h // 8), rng, low=max(1, h // 8))
        dx = randint(n, w - max(1, w // 8), rng, low=max(1, w // 8))
        patch = shift(good, dy, dx)
        patch = (patch * uniform(n, rng, 1 - self.jitter, 1 + self.jitter).view(-1, 1, 1, 1).to(self.device)).clamp(0, 1)
        image = mask * patch + (1 - mask) * good
        return SyntheticBatch(image, mask, labels(n, index, self.device), good)
