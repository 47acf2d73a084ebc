"""The one reader and writer of checkpoints: written atomically (inspect_train.atomic), read back with one clear error.

A checkpoint is a dict saved with torch.save; `read_checkpoint` gives the dict
or one line naming the file and what is wrong with it, and `checkpoint_kind` says which writer made it (its
`kind` key, or the model file's `format`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from inspect_train.atomic import write_atomic
from inspect_train.errors import InputError


def save_checkpoint(state: dict, path: str | Path) -> Path:
    return write_atomic(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: str | Path, what: str = "checkpoint", map_location="cpu") -> dict:
    """The dict in a checkpoint file; one clear error for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise InputError(f"{path}: not a readable {what} ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a {what} of this project")
    return state


def checkpoint_kind(state: dict) -> str | None:
    """Which writer made a checkpoint: a generator's `kind`, a model file's `format`, else None."""
    return state.get("kind") or state.get("format")
