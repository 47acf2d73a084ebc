"""Where the samples to score come from: a folder of files written by any generator (`generate`), or a
generator sampled on the fly; both end as uint8 images (N, C, H, W) and bool masks (N, 1, H, W) at the
evaluation size and the data's channel count.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from inspect_train.data.images import read_image_array, read_mask_array, resize_image, resize_mask, to_channels
from inspect_train.data.mvtec import IMAGE_SUFFIXES
from inspect_train.errors import InputError
from inspect_train.progress import progress_bar

IMAGE_KEYS = ("image", "defect_image", "image_path", "file", "path", "filename")
DEFECT_KEYS = ("defect_type", "defect", "type")
MASK_KEYS = ("mask", "mask_path", "mask_file")
SKIP_DIRS = {"mask", "masks", "good", "goods", "ground_truth", "tb"}
SKIP_SUFFIXES = ("_mask", "_good")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _index_rows(folder: Path) -> tuple[list[dict], Path] | None:
    for name in ("index.csv", "index.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".csv"):
                with path.open(newline="") as handle:
                    return list(csv.DictReader(handle)), path
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
            raise InputError(f"{path}: unreadable index ({type(err).__name__})") from None
        if isinstance(data, dict):
            data = next((v for k, v in data.items() if k in ("samples", "images", "items", "records") and isinstance(v, list)), None)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError(f"{path}: expected a list of records (or {{'samples': [...]}})")
        return data, path
    return None


def _from_index(folder: Path, rows: list[dict], index_path: Path, defect: str) -> list[Path]:
    if not rows:
        raise InputError(f"{index_path}: index lists no samples")
    image_key = next((k for k in IMAGE_KEYS if k in rows[0]), None)
    if image_key is None:
        raise InputError(f"{index_path}: no image column (looked for {', '.join(IMAGE_KEYS)}); use --glob")
    defect_key = next((k for k in DEFECT_KEYS if k in rows[0]), None)
    if defect_key is not None:
        types = sorted({str(r.get(defect_key)) for r in rows})
        rows = [r for r in rows if str(r.get(defect_key)) == defect]
        if not rows:
            raise InputError(f"{index_path}: no sample of defect type '{defect}' (index has {', '.join(types)})")
    paths = []
    for row in rows:
        path = Path(str(row[image_key]))
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise InputError(f"{path}: listed in {index_path.name} but not found")
        paths.append(path)
    return paths


def _looks_like_defect_image(path: Path, folder: Path) -> bool:
    parts = {p.lower() for p in path.relative_to(folder).parts[:-1]}
    return not (parts & SKIP_DIRS) and not path.stem.lower().endswith(SKIP_SUFFIXES)


def generated_image_paths(folder: str | Path, defect: str, glob: str | None = None) -> tuple[list[Path], str]:
    """The defect images in a folder, and how they were picked (recorded in results.json).

    --glob wins; else an index.json/index.csv (as `inspect-train generate` writes), filtered to
    the defect type when it has a defect column; else every image under the folder (or under
    <folder>/<defect> if present) except masks and paired good images (`*_mask.*`, `*_good.*`,
    folders named masks/goods).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: generated-images folder not found")
    if glob:
        paths = sorted(p for p in folder.glob(glob) if is_image(p))
        how = f"glob '{glob}'"
    elif (found := _index_rows(folder)) is not None:
        rows, index_path = found
        paths = _from_index(folder, rows, index_path, defect)
        how = f"index {index_path.name}"
    else:
        root = folder / defect if (folder / defect).is_dir() else folder
        paths = sorted(p for p in root.rglob("*") if is_image(p) and _looks_like_defect_image(p, folder))
        how = f"all images under {root.name}/ except masks and goods"
    if not paths:
        raise InputError(f"{folder}: no generated images found ({how})")
    return paths, how


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8, rounded as PNG writers do."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def tells_defect_types(folder: Path, defects: list[str], glob: str | None = None) -> bool:
    """Whether a folder says which defect type each image is: an index with a defect column (without --glob),
    or a <folder>/<defect>/ subfolder for every type."""
    if glob:
        return False
    found = _index_rows(folder)
    if found is not None:
        return bool(found[0]) and any(k in found[0][0] for k in DEFECT_KEYS)
    return all((folder / d).is_dir() for d in defects)


def _index_masks(folder: Path) -> dict[Path, Path]:
    """image path -> mask path, from an index.csv/index.json with a mask column (as `generate` writes)."""
    found = _index_rows(folder)
    if found is None or not found[0]:
        return {}
    rows = found[0]
    image_key = next((k for k in IMAGE_KEYS if k in rows[0]), None)
    mask_key = next((k for k in MASK_KEYS if k in rows[0]), None)
    if image_key is None or mask_key is None:
        return {}
    resolve = lambda v: (lambda p: p if p.is_absolute() else folder / p)(Path(str(v)))  # noqa: E731
    return {resolve(r[image_key]): resolve(r[mask_key]) for r in rows if r.get(mask_key)}


def _mask_beside(image: Path) -> Path | None:
    """masks/<name> next to an images/ folder, or <stem>_mask.<ext> beside the image."""
    candidates = [image.parent.parent / "masks" / image.name] if image.parent.name.lower() in ("images", "image") else []
    candidates += [image.with_name(f"{image.stem}_mask{suffix}") for suffix in (image.suffix, ".png")]
    return next((c for c in candidates if c.is_file()), None)


def generated_pairs(folder: str | Path, defect: str, glob: str | None = None) -> tuple[list[Path], list[Path], str]:
    """The defect images of a folder (see generated_image_paths) and each one's mask: the index's mask column,
    else masks/<name> beside images/, else <stem>_mask.<ext>. A missing mask is one clear error."""
    folder = Path(folder).expanduser()
    images, how = generated_image_paths(folder, defect, glob)
    listed = _index_masks(folder)
    masks = []
    for image in images:
        mask = listed.get(image) or _mask_beside(image)
        if mask is None or not mask.is_file():
            raise InputError(f"{image}: no mask found (looked for an index mask column, masks/{image.name} and "
                             f"{image.stem}_mask.png); evaluate-gen scores (image, mask) pairs")
        masks.append(mask)
    return images, masks, how


def load_pairs(images: list[Path], masks: list[Path], size: tuple[int, int], channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read (image, mask) files at `size` (H, W); generated masks may be empty (no check that they mark a pixel)."""
    out_images, out_masks = [], []
    for image_path, mask_path in progress_bar(list(zip(images, masks)), desc="reading generated images", unit="img", leave=False):
        arr, mask = read_image_array(image_path), read_mask_array(mask_path)
        if mask.shape != arr.shape[:2]:
            raise InputError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image is {arr.shape[1]}x{arr.shape[0]}")
        out_images.append(to_channels(resize_image(arr, size), channels))
        out_masks.append(resize_mask(mask, size))
    return torch.stack(out_images), torch.stack(out_masks)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """bool (N, 1, h, w) -> bool (N, 1, H, W): nearest neighbour; a mask that vanishes on shrinking takes every
    output pixel it touches instead (as data loading does, so thin generated defects are not lost)."""
    if tuple(masks.shape[2:]) == tuple(size):
        return masks.bool()
    x = masks.float()
    out = F.interpolate(x, size=size, mode="nearest") > 0.5
    lost = (out.flatten(1).sum(1) == 0) & (x.flatten(1).sum(1) > 0)
    if lost.any():
        out[lost] = F.adaptive_max_pool2d(x[lost], size) > 0.5
    return out


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, C, h, w) -> uint8 (N, C, H, W), bilinear with antialiasing when shrinking (as data loading)."""
    if tuple(images.shape[2:]) == tuple(size):
        return images
    x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def batch_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition, RGB -> grey by the channel mean, for a batch."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    return images.float().mean(1, keepdim=True).round().to(torch.uint8)


def sample_generator(generator, defect: str, n: int, *, size: tuple[int, int], channels: int, seed: int,
                     batch: int = 32, desc: str = "sampling") -> tuple[torch.Tensor, torch.Tensor]:
    """n fresh samples of one defect type from any DefectGenerator, on the CPU at `size` and `channels`,
    drawn from a torch.Generator(seed) on the generator's device (so each source's samples do not depend on
    which other sources are scored)."""
    rng = torch.Generator(device=generator.device).manual_seed(seed)
    images, masks = [], []
    with progress_bar(total=n, desc=desc, unit="img", leave=False) as bar:
        done = 0
        while done < n:
            count = min(batch, n - done)
            out = generator.sample(count, defect, rng)
            images.append(batch_channels(resize_images(to_uint8(out.images).cpu(), size), channels))
            masks.append(resize_masks((out.masks > 0.5).cpu(), size))
            done += count
            bar.update(count)
    return torch.cat(images), torch.cat(masks)
