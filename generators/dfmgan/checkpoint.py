"""DFMGAN's checkpoints (one file per stage, written atomically by inspect_train.checkpoint) and the RNG state
needed to resume a run exactly."""

from __future__ import annotations

from pathlib import Path

import torch

from generators.base import TrainingDiverged  # noqa: F401 - raised by the trainers that write these files
from inspect_train.checkpoint import read_checkpoint, save_checkpoint  # noqa: F401 - the trainers write with it
from inspect_train.errors import InputError


# What every complete checkpoint of each stage holds (a file without it is refused before any of it is used).
KEYS = {"dfmgan-backbone": ("config", "channels", "resolution", "G", "G_ema"),
        "dfmgan-defect": ("config", "channels", "resolution", "defect_type")}


def load_checkpoint(path: Path | str, kind: str | None = None, map_location="cpu") -> dict:
    """Read a DFMGAN checkpoint; `kind` ('backbone' or 'defect') checks which stage wrote it."""
    state = read_checkpoint(path, map_location=map_location)
    if not str(state.get("kind", "")).startswith("dfmgan-"):
        raise InputError(f"{path}: not a DFMGAN checkpoint")
    if kind is not None and state["kind"] != f"dfmgan-{kind}":
        raise InputError(f"{path}: is a {state['kind']} checkpoint, expected dfmgan-{kind}")
    missing = [key for key in KEYS.get(state["kind"], ()) if key not in state]
    if missing:
        raise InputError(f"{path}: an incomplete {state['kind']} checkpoint (no {', '.join(missing)})")
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
