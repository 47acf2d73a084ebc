"""Diffusion painter configs: YAML presets in configs/ (diffusion-tiny, diffusion-64, diffusion-128) or a path,
checked on load."""

from __future__ import annotations

from inspect_train.config_files import read_required_preset
from inspect_train.errors import InputError

REQUIRED = ("resolution", "band", "unet", "schedule", "sample", "masks", "train")
SAMPLERS = ("ddim", "dpm")
PREDICTIONS = ("epsilon", "v_prediction", "sample")


def load_config(name_or_path: str) -> dict:
    """'diffusion-tiny' -> configs/diffusion-tiny.yaml; a path is read as-is."""
    config, path = read_required_preset(name_or_path, "diffusion", REQUIRED)
    check_config(config, str(path))
    return config


def levels(config: dict) -> int:
    """How many times the UNet halves its input: every side it sees must divide by 2 ** levels."""
    return len(config["unet"]["channels"]) - 1


def check_config(config: dict, where: str = "config") -> None:
    unet = config["unet"]
    channels = [int(c) for c in unet.get("channels") or []]
    if len(channels) < 2:
        raise InputError(f"{where}: unet.channels needs at least two levels, got {unet.get('channels')}")
    groups = int(unet.get("norm_groups", 8))
    if any(c % groups for c in channels):
        raise InputError(f"{where}: unet.norm_groups {groups} must divide every unet.channels entry {channels}")
    res, step = int(config["resolution"]), 2 ** levels(config)
    if res < 8 or res % step:
        raise InputError(f"{where}: resolution {res} must be at least 8 and divisible by 2^levels = {step}")
    window = int(config["train"].get("crop") or res)
    if not step <= window <= res or window % step:
        raise InputError(f"{where}: train.crop {window} must be between {step} and the resolution {res}, "
                         f"divisible by {step}")
    paint = int(config["sample"].get("window") or res)
    if not step <= paint <= res or paint % step:
        raise InputError(f"{where}: sample.window {paint} must be between {step} and the resolution {res}, "
                         f"divisible by {step}")
    if config["sample"].get("scheduler", "ddim") not in SAMPLERS:
        raise InputError(f"{where}: sample.scheduler '{config['sample'].get('scheduler')}' (choose "
                         f"{', '.join(SAMPLERS)})")
    if int(config["sample"].get("steps", 0)) < 1:
        raise InputError(f"{where}: sample.steps must be at least 1")
    if config["schedule"].get("prediction", "epsilon") not in PREDICTIONS:
        raise InputError(f"{where}: schedule.prediction '{config['schedule'].get('prediction')}' (choose "
                         f"{', '.join(PREDICTIONS)})")
    if int(config["train"]["batch"]) < 1:
        raise InputError(f"{where}: train.batch must be at least 1")
    if not 0 <= float(config["train"].get("good_fraction", 0.0)) < 1:
        raise InputError(f"{where}: train.good_fraction must be in [0, 1)")


def default_config_for(size: tuple[int, int]) -> str:
    """The smallest painter at least as large as the task's longer side (tiny up to 32 px, 64, then 128)."""
    side = max(size)
    return "diffusion-tiny" if side <= 32 else "diffusion-64" if side <= 64 else "diffusion-128"
