"""Painter checkpoints: written by the DFMGAN helpers (atomic, with RNG state; generators/dfmgan/training.py)
under their own kind, so neither side loads the other's file by mistake."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from inspect_train.errors import InputError

KIND = "inpaint-painter"


def painter_file(defect_type: str) -> str:
    return "inpaint_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", defect_type) + ".pt"


def read_any_checkpoint(path: Path | str) -> dict:
    """The dict in a checkpoint file, whatever wrote it; one clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a corrupt file
        raise InputError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a checkpoint of this project")
    return state


def is_painter(state: dict) -> bool:
    return state.get("kind") == KIND


def load_painter_checkpoint(path: Path | str) -> dict:
    state = read_any_checkpoint(path)
    if not is_painter(state):
        raise InputError(f"{path}: is a {state.get('kind', 'unknown')} checkpoint, not an inpaint painter")
    return state


def painter_from_state(state: dict, device="cpu"):
    """The EMA painter of a checkpoint, in eval mode without gradients, on `device`."""
    from generators.inpaint.networks import build_networks

    painter, _, _ = build_networks(state["config"], int(state["channels"]))
    painter.load_state_dict(state["painter_ema"])
    return painter.to(device).eval().requires_grad_(False)
