"""Image stacks kept on the generator's device as float in [0, 1], with the names they came from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inspect_train.data.images import ImageSet
from inspect_train.errors import InputError


@dataclass
class DeviceSet:
    names: list[str]
    images: torch.Tensor  # float (N, C, H, W) in [0, 1]
    masks: torch.Tensor | None  # float (N, 1, H, W) in {0, 1}

    @classmethod
    def from_image_set(cls, image_set: ImageSet, device: torch.device, what: str) -> "DeviceSet":
        if len(image_set) == 0:
            raise InputError(f"{what}: no images to draw from")
        images = image_set.images.to(device).float().div_(255.0)
        masks = None if image_set.masks is None else image_set.masks.to(device).float()
        return cls(list(image_set.names), images, masks)

    def __len__(self) -> int:
        return len(self.names)

    def draw(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """n random indices (with replacement) on the images' device."""
        idx = torch.randint(len(self.names), (n,), generator=rng, device=rng.device)
        return idx.to(self.images.device)


def check_type(generator, defect_type: str) -> int:
    if defect_type not in generator.defect_types:
        raise InputError(f"defect type '{defect_type}' is not one of {generator.defect_types}")
    return generator.defect_types.index(defect_type)


def labels(n: int, index: int, device: torch.device) -> torch.Tensor:
    return torch.full((n,), index, dtype=torch.long, device=device)
