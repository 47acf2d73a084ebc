"""Load a whole category into memory: good images, defect images and masks, one size, one channel count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from inspect_train.data.images import ImageSet, load_image_set
from inspect_train.data.mvtec import CategoryIndex, scan_category
from inspect_train.errors import InputError


@dataclass
class CategoryData:
    index: CategoryIndex
    train_good: ImageSet
    test_good: ImageSet
    defects: dict[str, ImageSet]

    @property
    def channels(self) -> int:
        return int(self.train_good.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.train_good.images.shape[2:])

    @property
    def defect_types(self) -> list[str]:
        return sorted(self.defects)


def _with_channels(image_set: ImageSet, channels: int) -> ImageSet:
    if image_set.images.shape[1] == channels:
        return image_set
    return ImageSet(image_set.names, image_set.images.expand(-1, channels, -1, -1).contiguous(), image_set.masks)


def load_category(
    data_root: str | Path,
    category: str,
    size: tuple[int, int] | None = None,
    index: CategoryIndex | None = None,
) -> CategoryData:
    """Scan, read and validate every image of a category.

    Grey and RGB may be mixed: if any image is RGB, grey ones are repeated to
    three channels. Without `size`, every image must have the same size.
    """
    index = index or scan_category(data_root, category)
    train_good = load_image_set(index.train_good, size=size)
    test_good = load_image_set(index.test_good, size=size)
    defects = {
        defect: load_image_set([i.image for i in items], [i.mask for i in items], size=size)
        for defect, items in index.defects.items()
    }
    sets = [train_good, test_good, *defects.values()]
    channels = max(s.images.shape[1] for s in sets if len(s))
    sizes = {tuple(s.images.shape[2:]) for s in sets if len(s)}
    if len(sizes) > 1:
        raise InputError(
            f"{index.folder}: images have different sizes {sorted(sizes)}; pass --resolution to resize them"
        )
    fix = lambda s: _with_channels(s, channels) if len(s) else ImageSet(s.names, torch.zeros((0, channels, *next(iter(sizes))), dtype=torch.uint8), s.masks)  # noqa: E731
    return CategoryData(
        index=index,
        train_good=fix(train_good),
        test_good=fix(test_good),
        defects={k: fix(v) for k, v in defects.items()},
    )
