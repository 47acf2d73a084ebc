"""Inpaint painter configs: YAML presets in configs/ (inpaint-tiny, inpaint-64, inpaint-128) or a path, checked
on load."""

from __future__ import annotations

from inspect_train.config_files import read_required_preset
from inspect_train.errors import InputError

REQUIRED = ("resolution", "painter", "local_d", "match_d", "band", "masks", "train")
LOSSES = ("nsgan", "r3gan")


def load_config(name_or_path: str) -> dict:
    """'inpaint-tiny' -> configs/inpaint-tiny.yaml; a path is read as-is."""
    config, path = read_required_preset(name_or_path, "inpaint", REQUIRED)
    check_config(config, str(path))
    return config


def check_config(config: dict, where: str = "config") -> None:
    res, depth = int(config["resolution"]), int(config["painter"]["depth"])
    if res < 8 or res % (2 ** depth):
        raise InputError(f"{where}: resolution {res} must be at least 8 and divisible by 2^depth = {2 ** depth}")
    window = int(config["train"].get("crop") or res)
    if not 8 <= window <= res or window % (2 ** depth):
        raise InputError(f"{where}: train.crop {window} must be between 8 and the resolution {res}, divisible by "
                         f"2^depth = {2 ** depth}")
    crop = int(config["local_d"]["crop"])
    if not 8 <= crop <= window:
        raise InputError(f"{where}: local_d.crop {crop} must be between 8 and the training window {window}")
    loss = config["train"].get("loss", "nsgan")
    if loss not in LOSSES:
        raise InputError(f"{where}: train.loss '{loss}' (choose {', '.join(LOSSES)})")
    batch = int(config["train"]["batch"])
    if batch < 2 or batch % 2:
        raise InputError(f"{where}: train.batch must be even and at least 2 (mode-seeking pairs), got {batch}")


def default_config_for(size: tuple[int, int]) -> str:
    """The preset to use when a run names none: the smallest painter at least as large as the task's longer side
    (tiny for tests and toy runs at 32 px, 64 for classify-64, 128 above), so no step is spent on pixels the task
    throws away."""
    side = max(size)
    return "inpaint-tiny" if side <= 32 else "inpaint-64" if side <= 64 else "inpaint-128"
