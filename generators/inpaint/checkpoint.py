"""Painter checkpoints: written by the DFMGAN helpers (atomic, with RNG state; generators/dfmgan/training.py)
under their own kind, so neither side loads the other's file by mistake."""

from __future__ import annotations

import re
from pathlib import Path

from generators.inpaint.networks import build_networks
from inspect_train.checkpoint import read_checkpoint
from inspect_train.errors import InputError

KIND = "inpaint-painter"


def painter_file(defect_type: str) -> str:
    return "inpaint_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", defect_type) + ".pt"


def is_painter(state: dict) -> bool:
    return state.get("kind") == KIND


def load_painter_checkpoint(path: Path | str) -> dict:
    state = read_checkpoint(path)
    if not is_painter(state):
        raise InputError(f"{path}: is a {state.get('kind', 'unknown')} checkpoint, not an inpaint painter")
    return state


def painter_from_state(state: dict, device="cpu"):
    """The EMA painter of a checkpoint, in eval mode without gradients, on `device`."""
    painter, _, _ = build_networks(state["config"], int(state["channels"]))
    painter.load_state_dict(state["painter_ema"])
    return painter.to(device).eval().requires_grad_(False)
