"""A timm classifier by name, random init unless weights are given.

`weights` is a local checkpoint file or the word `pretrained`, meaning timm's own
pretrained weights from the local Hugging Face / torch cache (never
downloaded: this machine may have no internet). The model normalises its
input itself, so every caller feeds images in [0, 1].
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import timm
from huggingface_hub import constants
from timm.models import adapt_input_conv, load_state_dict
from torch import nn

from inspect_train.errors import InputError

from inspect_train.models.normalise import PRETRAINED, IMAGENET_MEAN, IMAGENET_STD, Normalised, fit_channels


def _load_file(net: nn.Module, path: Path, in_chans: int) -> None:
    """Load matching tensors from a checkpoint; a new head and a different input width are adapted."""
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    try:
        state = load_state_dict(str(path))
    except Exception as err:  # torch/safetensors raise many types for a bad file
        raise InputError(f"{path}: not a readable weights file ({type(err).__name__})") from None
    own = net.state_dict()
    first_conv = getattr(net, "pretrained_cfg", {}).get("first_conv")
    key = f"{first_conv}.weight" if first_conv else None
    if key in state and key in own and state[key].shape[1] != in_chans:
        state[key] = adapt_input_conv(in_chans, state[key])
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise InputError(f"{path}: no tensor in it fits model '{type(net).__name__}' (wrong architecture?)")
    net.load_state_dict(usable, strict=False)


@contextmanager
def _hub_offline():
    """Look only in the local cache: no network retries on an offline machine."""
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def check_model_args(name: str, weights: str | Path | None) -> None:
    """Cheap checks to run before any data is loaded: a known timm name, an existing weights file."""
    if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
        raise InputError(f"--model '{name}' is not a timm model name (e.g. resnet18, resnet34, efficientnet_b0)")
    if weights is not None and str(weights) != PRETRAINED and not Path(weights).expanduser().is_file():
        raise InputError(f"{weights}: weights file not found")


def build_classifier(name: str, num_classes: int, in_chans: int = 3, weights: str | Path | None = None) -> nn.Module:
    """timm model `name` with a `num_classes` head for [0, 1] images of `in_chans` channels."""
    check_model_args(name, weights)
    if weights is not None and str(weights) == PRETRAINED:
        try:
            with _hub_offline():
                net = timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans)
        except Exception as err:
            raise InputError(
                f"--weights pretrained: pretrained weights for '{name}' are not in the local timm/Hugging Face cache "
                f"({type(err).__name__}); fetch them on a machine with internet or pass --weights FILE"
            ) from None
    else:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
        if weights is not None:
            _load_file(net, Path(weights).expanduser(), in_chans)
    if weights is None:
        return Normalised(net, (0.5,) * in_chans, (0.25,) * in_chans)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    return Normalised(net, *fit_channels(cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD), in_chans))
