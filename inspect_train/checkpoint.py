"""The one reader and writer of checkpoints: written atomically (inspect_train.atomic), read back with one clear error.

A checkpoint is a dict of tensors and plain values saved with torch.save, stamped with the format version that
wrote it. `read_checkpoint` reads it with torch's weights-only unpickler, which builds tensors and plain
containers and nothing else, so a file made to run code when unpickled is refused unread (checkpoints travel
between colleagues and from the internet); a file from a newer format, or not a dict, is one line naming it.
`checkpoint_kind` says which writer made it (its `kind` key, or the model file's `format`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from inspect_train.atomic import write_atomic
from inspect_train.errors import InputError

VERSION = 1  # the checkpoint format this code writes and the newest it reads
NUMPY_ARRAYS = (np.ndarray, np.dtype, np._core.multiarray._reconstruct)  # what an array needs to be rebuilt


class RefusedFile(InputError):
    """A file that names Python objects our files never hold: refused before anything in it ran."""


def save_checkpoint(state: dict, path: str | Path) -> Path:
    stamped = {**state, "checkpoint_version": VERSION}
    return write_atomic(path, lambda tmp: torch.save(stamped, tmp))


def load_weights_only(path: Path, what: str, map_location="cpu", allowed: tuple = ()):
    """torch.load restricted to tensors, plain containers and the `allowed` types (numpy arrays, a task's own
    records); one line for a file that is not that."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported" in str(err):  # it names a class or function: refused before anything ran
            raise RefusedFile(f"{path}: refused: it holds Python objects a {what} never does (nothing in it was "
                              "run); use a file this project wrote") from None
        raise InputError(f"{path}: not a readable {what} (UnpicklingError)") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise InputError(f"{path}: not a readable {what} ({type(err).__name__})") from None


def read_checkpoint(path: str | Path, what: str = "checkpoint", map_location="cpu") -> dict:
    """The dict in a checkpoint file; one clear error for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    state = load_weights_only(path, what, map_location)
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a {what} of this project")
    if int(state.get("checkpoint_version", 0)) > VERSION:
        raise InputError(f"{path}: {what} format {state['checkpoint_version']} is newer than this inspect-train "
                         f"reads ({VERSION}); upgrade inspect-train")
    return state


def checkpoint_kind(state: dict) -> str | None:
    """Which writer made a checkpoint: a generator's `kind`, a model file's `format`, else None."""
    return state.get("kind") or state.get("format")
