"""Diffusion painter checkpoints: written atomically through inspect_train.checkpoint (with RNG state, by the
shared helpers of generators/dfmgan/training.py) under their own kind, so no other generator loads one by
mistake."""

from __future__ import annotations

import re
from pathlib import Path

from generators.diffusion.networks import build_unet
from inspect_train.checkpoint import read_checkpoint
from inspect_train.errors import InputError

KIND = "diffusion-painter"
KEYS = ("config", "channels", "resolution", "defect_type", "base_masks")  # both paths; the UNet or LoRA below


def painter_file(defect_type: str) -> str:
    return "diffusion_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", defect_type) + ".pt"


def load_painter_checkpoint(path: Path | str) -> dict:
    state = read_checkpoint(path)
    if state.get("kind") != KIND:
        raise InputError(f"{path}: is a {state.get('kind', 'unknown')} checkpoint, not a diffusion painter")
    own = ("lora", "token", "token_embedding", "weights") if state.get("mode") == "pretrained" else ("unet_ema",)
    missing = [k for k in own if k not in state]
    if missing:
        raise InputError(f"{path}: an incomplete diffusion painter checkpoint (no {', '.join(missing)})")
    return state


def unet_from_state(state: dict, device="cpu"):
    """The EMA UNet of a checkpoint, in eval mode without gradients, on `device`."""
    unet = build_unet(state["config"], int(state["channels"]))
    unet.load_state_dict(state["unet_ema"])
    return unet.to(device).eval().requires_grad_(False)
