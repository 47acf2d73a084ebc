"""Crop-paste (Lin et al. 2021): cut a base-set defect by its mask and paste it on a good image.

The defect keeps its own pixels; it gets a random flip / quarter turn and a
random position that keeps it whole inside the image. The mask follows; the
good image it was pasted on is returned as the paired defect-free image.
"""

from __future__ import annotations

import torch

from generators.base import SyntheticBatch
from generators.classic._sources import DeviceSet, check_type, labels
from generators.classic.geometry import random_flip_rot, shift_inside
from inspect_train.data.images import ImageSet


class CropPasteGenerator:
    def __init__(self, defects: dict[str, ImageSet], goods: ImageSet, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.defect_types = sorted(defects)
        self.sources = {t: DeviceSet.from_image_set(s, self.device, f"base set of '{t}'") for t, s in defects.items()}
        self.goods = DeviceSet.from_image_set(goods, self.device, "train/good")
        self.source_names = {t: list(s.names) for t, s in self.sources.items()}

    def sample(self, n: int, defect_type: str, rng: torch.Generator) -> SyntheticBatch:
        index = check_type(self, defect_type)
        source = self.sources[defect_type]
        picked = source.draw(n, rng)
        stacked = torch.cat([source.images[picked], source.masks[picked]], dim=1)
        stacked = random_flip_rot(stacked, rng)
        stacked = shift_inside(stacked, stacked[:, -1:], rng)
        defect, mask = stacked[:, :-1], stacked[:, -1:]
        good = self.goods.images[self.goods.draw(n, rng)]
        image = mask * defect + (1 - mask) * good
        return SyntheticBatch(image, mask, labels(n, index, self.device), good)
