"""Where the images to score come from: a folder of files (any generator) or a DFMGAN checkpoint.

Both yield uint8 (B, C, H, W) batches, so KID features can be computed while
streaming 5,000 images; only the images kept for LPIPS stay in memory.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

import torch

from inspect_train.data.images import read_image_array, to_channels
from inspect_train.data.mvtec import IMAGE_SUFFIXES
from inspect_train.errors import InputError

IMAGE_KEYS = ("image", "defect_image", "image_path", "file", "path", "filename")
DEFECT_KEYS = ("defect_type", "defect", "type")
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


def iter_folder(paths: list[Path], batch: int, channels: int) -> Iterator[torch.Tensor]:
    """uint8 (B, channels, H, W) batches; every image must have the size of the first one."""
    size = None
    for start in range(0, len(paths), batch):
        chunk = []
        for path in paths[start:start + batch]:
            arr = read_image_array(path)
            if size is None:
                size = arr.shape[:2]
            elif arr.shape[:2] != size:
                raise InputError(f"{path}: is {arr.shape[1]}x{arr.shape[0]}, other generated images are {size[1]}x{size[0]}")
            chunk.append(to_channels(torch.from_numpy(arr).permute(2, 0, 1), channels))
        yield torch.stack(chunk)


def folder_channels(paths: list[Path]) -> tuple[int, tuple[int, int]]:
    """Channel count (3 if the first image is RGB) and (H, W) of the first generated image."""
    arr = read_image_array(paths[0])
    return (3 if arr.shape[2] == 3 else 1), tuple(arr.shape[:2])


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8, rounded as PNG writers do."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def iter_generator(generator, defect: str, n: int, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """n fresh samples of one defect type from any DefectGenerator, drawn from a CPU torch.Generator(seed)."""
    rng = torch.Generator().manual_seed(seed)
    done = 0
    while done < n:
        count = min(batch, n - done)
        yield to_uint8(generator.sample(count, defect, rng).images).cpu()
        done += count
