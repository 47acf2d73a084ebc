"""One-file checkpoints written atomically, with the RNG state needed to resume a run exactly."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from inspect_train.errors import InputError


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf; the last good checkpoint on disk is left untouched."""


def save_checkpoint(state: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: Path | str, kind: str | None = None, map_location="cpu") -> dict:
    """Read a DFMGAN checkpoint; `kind` ('backbone' or 'defect') checks which stage wrote it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a corrupt file
        raise InputError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or not str(state.get("kind", "")).startswith("dfmgan-"):
        raise InputError(f"{path}: not a DFMGAN checkpoint")
    if kind is not None and state["kind"] != f"dfmgan-{kind}":
        raise InputError(f"{path}: is a {state['kind']} checkpoint, expected dfmgan-{kind}")
    return state


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
