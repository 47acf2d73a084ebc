"""Image and mask files -> validated uint8 tensors at one resolution.

Images are kept as uint8 (N, C, H, W) in memory: the real datasets are a few
hundred images, so holding them costs little and makes every epoch free of
disk reads. Values are converted to float only on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from inspect_train.errors import InputError


def parse_resolution(value: str | int | None) -> tuple[int, int] | None:
    """'256' -> (256, 256); '128x320' -> (128, 320) as (height, width); None stays None."""
    if value is None:
        return None
    if isinstance(value, int):
        size = (value, value)
    else:
        text = str(value).lower().strip()
        try:
            if "x" in text:
                h, w = text.split("x", 1)
                size = (int(h), int(w))
            else:
                size = (int(text), int(text))
        except ValueError:
            raise InputError(f"resolution '{value}' is not N or HxW (e.g. 256 or 128x320)") from None
    if min(size) < 8:
        raise InputError(f"resolution {value} is too small (at least 8 pixels per side)")
    return size


def read_image_array(path: Path) -> np.ndarray:
    """Read an image as uint8 (H, W, C) with C in {1, 3}; one clear error if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.array(img, dtype=np.float64)
                peak = arr.max() if arr.max() > 255 else 255.0
                arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)[:, :, None]
                return arr
            if img.mode in ("1", "L"):
                return np.array(img.convert("L"), dtype=np.uint8)[:, :, None]
            if img.mode == "LA":
                return np.array(img.convert("L"), dtype=np.uint8)[:, :, None]
            return np.array(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path}: unreadable or corrupt image ({type(err).__name__})") from None


def read_mask_array(path: Path) -> np.ndarray:
    """Read a mask as bool (H, W): any non-zero pixel of the first channel is defect."""
    arr = read_image_array(path)
    return arr[:, :, 0] > 127


def resize_image(arr: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 (H, W, C) -> uint8 (C, h, w), bilinear with antialiasing when shrinking."""
    tensor = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if size is None or tuple(tensor.shape[1:]) == tuple(size):
        return tensor.contiguous()
    resized = F.interpolate(tensor[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def resize_mask(mask: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """bool (H, W) -> bool (1, h, w) by nearest neighbour, then binarised.

    A thin defect can vanish under nearest-neighbour shrinking; then the mask is
    taken as every output pixel the defect touches (area coverage > 0), so a
    defect image never ends up with an empty mask.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()
    if size is None or tuple(tensor.shape[2:]) == tuple(size):
        return tensor[0] > 0.5
    nearest = F.interpolate(tensor, size=size, mode="nearest")[0] > 0.5
    if nearest.any() or not mask.any():
        return nearest
    return F.adaptive_max_pool2d(tensor, size)[0] > 0.5


@dataclass
class ImageSet:
    """A stack of same-size images (uint8, N x C x H x W) with optional masks (bool, N x 1 x H x W)."""

    names: list[str]
    images: torch.Tensor
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.names)

    def select(self, names: Sequence[str]) -> "ImageSet":
        """The subset with these file names, in the given order."""
        position = {name: i for i, name in enumerate(self.names)}
        missing = [n for n in names if n not in position]
        if missing:
            raise InputError(f"image(s) not in this set: {', '.join(missing[:5])}")
        idx = torch.tensor([position[n] for n in names], dtype=torch.long)
        masks = self.masks[idx] if self.masks is not None else None
        return ImageSet(list(names), self.images[idx], masks)


def to_channels(tensor: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat a grey channel to RGB, or average RGB down to grey."""
    if tensor.shape[0] == channels:
        return tensor
    if channels == 3:
        return tensor.expand(3, -1, -1).contiguous()
    return tensor.float().mean(0, keepdim=True).round().to(torch.uint8)


def load_image_set(
    paths: Sequence[Path],
    mask_paths: Sequence[Path] | None = None,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> ImageSet:
    """Load images (and masks) into one stack, validating every file.

    Without `size`, all images must already share one size. `channels`
    defaults to 1 when every image is grey, else 3.
    """
    arrays = [read_image_array(Path(p)) for p in paths]
    if channels is None:
        channels = 3 if any(a.shape[2] == 3 for a in arrays) else 1
    if size is None and arrays:
        shapes = {a.shape[:2] for a in arrays}
        if len(shapes) > 1:
            raise InputError(
                f"images in {Path(paths[0]).parent} have different sizes {sorted(shapes)[:3]}...; "
                "pass --resolution to resize them to one size"
            )
    images = [to_channels(resize_image(a, size), channels) for a in arrays]
    masks = None
    if mask_paths is not None:
        masks = []
        for img_path, mask_path, arr in zip(paths, mask_paths, arrays):
            mask = read_mask_array(Path(mask_path))
            check_mask(Path(img_path), Path(mask_path), arr, mask)
            masks.append(resize_mask(mask, size))
    names = [Path(p).name for p in paths]
    if not images:
        empty = torch.zeros((0, channels or 1, *(size or (1, 1))), dtype=torch.uint8)
        return ImageSet(names, empty, None if masks is None else torch.zeros((0, 1, *empty.shape[2:]), dtype=torch.bool))
    return ImageSet(names, torch.stack(images), None if masks is None else torch.stack(masks))


def check_mask(image_path: Path, mask_path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    """A defect mask must match its image in size and mark at least one pixel."""
    if image.shape[:2] != mask.shape:
        ih, iw = image.shape[:2]
        mh, mw = mask.shape
        raise InputError(f"{mask_path}: mask is {mw}x{mh} but its image {image_path.name} is {iw}x{ih}")
    if not mask.any():
        raise InputError(f"{mask_path}: mask is empty (no defect pixel) for defect image {image_path.name}")
