"""DFMGAN configs: YAML files under configs/ (by name) or any YAML path, checked on load."""

from __future__ import annotations

from inspect_train.config_files import read_required_preset
from generators.dfmgan.path_length import pl_settings
from inspect_train.errors import InputError

# What feeds the residual blocks above the first: "injected", the paper's wiring (the defect-injected feature map of
# the resolution below, which "takes the place of" the object features as the input of the following blocks, so
# each residual block sees the local background), or "residual" (the previous residual block's output alone), the
# wiring of generators trained before the option existed; a checkpoint whose config lacks the key is one of those.
RESIDUAL_INPUTS = ("injected", "residual")
LEGACY_RESIDUAL_INPUT = "residual"
# Stage-2 network choices: a stage-2 config sets them even on a backbone trained before they existed.
# `mask_refine`: each residual level above the first adds its own mask logits (thin masks); off by default.
STAGE2_NETWORK_KEYS = ("residual_input", "mask_refine")

REQUIRED = ("resolution", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "res_start",
            "d_channel_base", "d_channel_max", "dmatch_channel_base", "dmatch_channel_max", "stage1", "stage2")


def load_config(name_or_path: str) -> dict:
    """'dfmgan-tiny' -> configs/dfmgan-tiny.yaml; a path is read as-is."""
    config, path = read_required_preset(name_or_path, "dfmgan", REQUIRED)
    config.setdefault("residual_input", "injected")  # a new run: the paper's wiring unless the preset says
    check_config(config, str(path))
    config["resolution"] = resolution_value(resolution_hw(config))  # one stored form: N or 'HxW'
    return config


def parse_hw(value, where: str = "resolution") -> tuple[int, int]:
    """(H, W) from the forms a config, a checkpoint or a flag may hold: an int (square, as every file made before
    rectangles), 'HxW' or [H, W]."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        parts = list(value)
    elif isinstance(value, str):
        parts = value.lower().split("x") if "x" in value.lower() else [value, value]
    else:
        parts = [value, value]
    try:
        if any(isinstance(v, (bool, float)) for v in parts):
            raise ValueError
        h, w = (int(v) for v in parts)
    except (TypeError, ValueError):
        raise InputError(f"{where}: resolution {value!r} is not N, 'HxW' or [H, W]") from None
    return h, w


def resolution_hw(config: dict, where: str = "config") -> tuple[int, int]:
    """The image size (H, W) of a DFMGAN config or checkpoint: what every module asks instead of reading
    `resolution` itself."""
    return parse_hw(config["resolution"], where)


def resolution_value(size: tuple[int, int]) -> int | str:
    """(H, W) as configs, checkpoints and cache indexes store it: an int when square (the form files made before
    rectangles hold, so they compare equal), else 'HxW'."""
    h, w = (int(v) for v in size)
    return h if h == w else f"{h}x{w}"


def check_size(size: tuple[int, int], where: str) -> None:
    """The short side S is a power of two (the level the channel widths refer to); both sides are multiples of
    S/4, so the first block's const and every level's maps have whole sizes (rH/S x rW/S at level r)."""
    h, w = size
    side = min(h, w)
    if h == w and (side < 8 or side & (side - 1)):
        raise InputError(f"{where}: resolution {side} must be a power of two, at least 8")
    if side < 8 or side & (side - 1):
        raise InputError(f"{where}: resolution {h}x{w}: the short side {side} must be a power of two, at least 8")
    if h % (side // 4) or w % (side // 4):
        raise InputError(f"{where}: resolution {h}x{w}: both sides must be multiples of {side // 4}, a quarter of "
                         f"the short side")


def check_config(config: dict, where: str = "config") -> None:
    size = resolution_hw(config, where)
    check_size(size, where)
    res, start = min(size), int(config["res_start"])
    if start < 8 or start & (start - 1) or start > res:
        raise InputError(f"{where}: res_start {start} must be a power of two between 8 and the resolution's short "
                         f"side {res}")
    for stage in ("stage1", "stage2"):
        mixing = float((config.get(stage) or {}).get("style_mixing", 0.0))
        if not 0.0 <= mixing <= 1.0:
            raise InputError(f"{where}: {stage}.style_mixing {mixing} must be a probability between 0 and 1")
        pl_settings(config.get(stage) or {}, f"{where}: {stage}")
    if not isinstance(config.get("mask_refine", False), bool):
        raise InputError(f"{where}: mask_refine must be true or false (got {config['mask_refine']!r})")
    wiring = config.get("residual_input", LEGACY_RESIDUAL_INPUT)
    if wiring not in RESIDUAL_INPUTS:
        raise InputError(f"{where}: residual_input '{wiring}' must be one of {', '.join(RESIDUAL_INPUTS)}")


def with_resolution(config: dict, resolution) -> dict:
    """A copy of the config at another resolution: N (square), 'HxW' or (H, W); the residual start keeps its ratio
    to the short side."""
    size = parse_hw(resolution, f"--resolution {resolution}")
    out = dict(config)
    ratio = min(resolution_hw(config)) // int(config["res_start"])
    out["resolution"] = resolution_value(size)
    out["res_start"] = max(8, min(size) // ratio)
    check_config(out, f"--resolution {resolution_value(size)}")
    return out


def size_for_aspect(side: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """(H, W) with short side `side` and the aspect of `aspect` (H, W): the long side rounded to the nearest
    multiple of side/4, the sizes a generator can have. A square aspect gives side x side."""
    h, w = aspect
    step = side // 4
    long = max(side, round(max(h, w) * side / min(h, w) / step) * step)
    return (long, side) if h > w else (side, long) if w > h else (side, side)
