"""Masks a user drew: a folder of PNGs, read at one square resolution (for painters and `generate --masks`)."""

from __future__ import annotations

from pathlib import Path

import torch

from inspect_train.data.images import read_mask_array, resize_mask
from inspect_train.errors import InputError

MASK_SUFFIXES = (".png",)


def mask_paths(folder: str | Path) -> list[Path]:
    """The mask PNGs of a folder, sorted by name; a missing or empty folder is one clear error (also checked
    by the task settings, before any arm trains)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: mask folder not found")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MASK_SUFFIXES)
    if not paths:
        raise InputError(f"{folder}: no mask PNGs in this folder")
    return paths


def read_mask_folder(folder: str | Path, resolution: int) -> tuple[list[str], torch.Tensor]:
    """The PNG masks of a folder (sorted by name) as float (N, 1, R, R); any size is resized, not refused.
    An empty folder or an all-black mask is one clear error."""
    paths = mask_paths(folder)
    masks = []
    for path in paths:
        mask = read_mask_array(path)
        if not mask.any():
            raise InputError(f"{path}: mask is empty (no defect pixel)")
        masks.append(resize_mask(mask, (resolution, resolution)).float())
    return [p.name for p in paths], torch.stack(masks)
