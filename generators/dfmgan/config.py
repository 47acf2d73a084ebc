"""DFMGAN configs: YAML files under configs/ (by name) or any YAML path, checked on load."""

from __future__ import annotations

from inspect_train.config_files import read_required_preset
from inspect_train.errors import InputError

# What feeds the residual blocks above the first: "injected", the paper's wiring (the defect-injected feature map of
# the resolution below, which "takes the place of" the object features as the input of the following blocks, so
# each residual block sees the local background), or "residual" (the previous residual block's output alone), the
# wiring of generators trained before the option existed; a checkpoint whose config lacks the key is one of those.
RESIDUAL_INPUTS = ("injected", "residual")
LEGACY_RESIDUAL_INPUT = "residual"

REQUIRED = ("resolution", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "res_start",
            "d_channel_base", "d_channel_max", "dmatch_channel_base", "dmatch_channel_max", "stage1", "stage2")


def load_config(name_or_path: str) -> dict:
    """'dfmgan-tiny' -> configs/dfmgan-tiny.yaml; a path is read as-is."""
    config, path = read_required_preset(name_or_path, "dfmgan", REQUIRED)
    config.setdefault("residual_input", "injected")  # a new run: the paper's wiring unless the preset says
    check_config(config, str(path))
    return config


def check_config(config: dict, where: str = "config") -> None:
    res, start = int(config["resolution"]), int(config["res_start"])
    if res < 8 or res & (res - 1):
        raise InputError(f"{where}: resolution {res} must be a power of two, at least 8")
    if start < 8 or start & (start - 1) or start > res:
        raise InputError(f"{where}: res_start {start} must be a power of two between 8 and the resolution {res}")
    for stage in ("stage1", "stage2"):
        mixing = float((config.get(stage) or {}).get("style_mixing", 0.0))
        if not 0.0 <= mixing <= 1.0:
            raise InputError(f"{where}: {stage}.style_mixing {mixing} must be a probability between 0 and 1")
    wiring = config.get("residual_input", LEGACY_RESIDUAL_INPUT)
    if wiring not in RESIDUAL_INPUTS:
        raise InputError(f"{where}: residual_input '{wiring}' must be one of {', '.join(RESIDUAL_INPUTS)}")


def with_resolution(config: dict, resolution: int) -> dict:
    """A copy of the config at another square resolution (the residual start keeps its ratio)."""
    out = dict(config)
    ratio = int(config["resolution"]) // int(config["res_start"])
    out["resolution"] = int(resolution)
    out["res_start"] = max(8, int(resolution) // ratio)
    check_config(out, f"--resolution {resolution}")
    return out
