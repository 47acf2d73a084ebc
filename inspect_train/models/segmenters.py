"""Segmentation networks by name: smp U-Net / DeepLabV3 (any smp encoder) and our DRAEM-style model.

Encoders start from random weights: nothing is downloaded at run time. Pass
`weights="pretrained"` to use smp's pretrained encoder from the local Hugging
Face cache (offline lookup only), or
a file path holding a state dict for the encoder (e.g. a torchvision ResNet
checkpoint). The input channel count comes from the data; a 3-channel first
convolution is summed down to grey (or spread over more channels) on load.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import huggingface_hub.constants as hub
import torch
import torch.nn as nn
import segmentation_models_pytorch as smp

from inspect_train.errors import InputError
from inspect_train.models.draem import Draem, DraemConfig

MODELS = ("unet", "deeplabv3", "draem")
from inspect_train.models.normalise import PRETRAINED, IMAGENET_MEAN, IMAGENET_STD, Normalised, fit_channels


def input_divisor(name: str, config: dict[str, Any]) -> int:
    """Height and width of the input must be multiples of this for the model to run."""
    if name == "draem":
        return draem_config(config).divisor
    return 2 ** int(config.get("encoder_depth", 5))


def draem_config(config: dict[str, Any]) -> DraemConfig:
    known = set(DraemConfig.__dataclass_fields__)
    return DraemConfig(**{k: v for k, v in config.items() if k in known})


def build_segmenter(
    name: str,
    in_channels: int,
    config: dict[str, Any] | None = None,
    encoder: str = "resnet18",
    weights: str | None = None,
) -> nn.Module:
    """A model taking images in [0, 1] whose forward gives defect logits (N, 1, H, W)
    (DRAEM: (reconstruction, logits)). `config` holds the model's widths (see configs/segment-*.yaml)."""
    config = dict(config or {})
    if name == "draem":
        if weights:
            raise InputError("--weights: DRAEM has no pretrained encoder; it always starts from random weights")
        return Draem(in_channels, draem_config(config))
    if name not in MODELS:
        raise InputError(f"--model '{name}': unknown (choose from {', '.join(MODELS)})")
    depth = int(config.get("encoder_depth", 5))
    kwargs: dict[str, Any] = dict(encoder_name=encoder, encoder_depth=depth, in_channels=in_channels, classes=1)
    if name == "unet":
        kwargs["decoder_channels"] = list(config.get("decoder_channels", (256, 128, 64, 32, 16)))[:depth]
        cls = smp.Unet
    else:
        kwargs["decoder_channels"] = int(config.get("decoder_channels", 256))
        cls = smp.DeepLabV3
    from_cache = weights == PRETRAINED
    try:
        with _hub_offline(from_cache):
            model = cls(encoder_weights="imagenet" if from_cache else None, **kwargs)
    except KeyError:
        raise InputError(f"--encoder '{encoder}': not an encoder segmentation-models-pytorch knows") from None
    except (OSError, RuntimeError, ValueError) as err:
        if from_cache:
            raise InputError(
                f"--weights pretrained: pretrained '{encoder}' weights are not in the local cache and cannot be "
                f"downloaded here ({type(err).__name__}); pass --weights PATH to a state-dict file"
            ) from None
        raise InputError(f"--model {name} --encoder {encoder}: {err}") from None
    if weights is not None and not from_cache:
        load_encoder_weights(model.encoder, weights)
    return Normalised(model, *fit_channels(IMAGENET_MEAN, IMAGENET_STD, in_channels))


@contextmanager
def _hub_offline(active: bool):
    """Look only in the local Hugging Face cache: no network retries that would stall a run for half a minute."""
    if not active:
        yield
        return

    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "encoder"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise TypeError("not a state dict")
    prefixes = ("module.", "net.", "encoder.", "model.")  # DDP, our Normalized wrapper, smp, others
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _fit_in_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Adapt a first-conv weight (out, in, k, k) to another input channel count, keeping the response to grey."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :channels] * (weight.shape[1] / channels)


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load matching tensors from a state-dict file into the encoder; refuse a file that matches nothing."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found (pass a state-dict file, or 'pretrained' for the smp cache)")
    try:
        state = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 - any unreadable file is one user error
        raise InputError(f"{path}: not a readable PyTorch state dict ({type(err).__name__})") from None
    own = encoder.state_dict()
    matched = {}
    for key, value in state.items():
        if key not in own:
            continue
        target = own[key]
        if value.ndim == 4 and target.ndim == 4 and value.shape[1] != target.shape[1] and value.shape[0] == target.shape[0]:
            value = _fit_in_channels(value, target.shape[1])
        if value.shape == target.shape:
            matched[key] = value.to(target.dtype)
    if not matched:
        raise InputError(f"{path}: no tensor matches the encoder's parameters (wrong architecture for --encoder?)")
    encoder.load_state_dict(matched, strict=False)
