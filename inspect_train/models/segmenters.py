"""Segmentation networks by name, each declared once as a `SegmenterSpec`: smp U-Net / DeepLabV3 (any smp
encoder), our DRAEM-style model and DeSTSeg.

A spec says how the model is built, what its input size must divide by, its training step (the loss of one
batch) and, where it has its own, its optimiser and learning-rate schedule; the segment task reads the spec and
names no model. Every segmenter's forward takes images in [0, 1] and gives its defect logits (N, 1, H, W), or a
tuple whose last item they are (DRAEM: (reconstruction, logits)); `defect_logits` reads either.

Encoders start from random weights: nothing is downloaded at run time. Pass
`weights="pretrained"` to use smp's pretrained encoder from the local Hugging Face
cache (offline lookup only), or
a file path holding a state dict for the encoder (e.g. a torchvision ResNet
checkpoint). The input channel count comes from the data; a 3-channel first
convolution is summed down to grey (or spread over more channels) on load.
DeSTSeg's teacher takes the same `weights` (see inspect_train.models.destseg.build_teacher).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import huggingface_hub.constants as hub
import torch
import torch.nn as nn
import torch.nn.functional as F
import segmentation_models_pytorch as smp
from segmentation_models_pytorch.losses import DiceLoss

from inspect_train.errors import InputError
from inspect_train.models.destseg import DeSTSeg, destseg_config, stage_schedule
from inspect_train.models.draem import Draem, DraemConfig, DraemLoss
from inspect_train.models.normalise import PRETRAINED, IMAGENET_MEAN, IMAGENET_STD, Normalised, fit_channels

# step(net, batch) -> (loss, {scalar name: detached value}, each row's mask loss (B,) or None) for one batch
StepFn = Callable[[nn.Module, Any], tuple]


@dataclass(frozen=True)
class SegmenterSpec:
    """One segmentation model, declared once.

    build(in_channels, config, weights, rebuild) -> the network (rebuild: a model file's network, random weights
    for its state dict to fill, nothing looked up); divisor(config) -> what height and width must divide by;
    step(config, loss_options, steps, device) -> StepFn (its third item, `mask_losses` of the batch's logits,
    is what steering reads); paired_good: its step reads each synthetic sample's
    defect-free twin (batch.synthetic_goods); optimizer(model, steps, lr, weight_decay, config, warmup_steps) ->
    (optimizer, scheduler), or None for the task's AdamW with a cosine schedule.
    """

    name: str
    build: Callable[..., nn.Module]
    divisor: Callable[[dict], int]
    step: Callable[..., StepFn]
    paired_good: bool = False
    optimizer: Callable | None = None


def defect_logits(output):
    """A segmenter's defect logits: DRAEM returns (reconstruction, logits), the others the logits alone."""
    return output[-1] if isinstance(output, (tuple, list)) else output


def mask_losses(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each row's pixel BCE inside its mask (over the whole image where the mask is empty): how badly the model
    misses that sample's defect, what steering ranks defect types and candidates by. Any segmenter's logits."""
    bce = F.binary_cross_entropy_with_logits(logits.detach().float(), masks.float(), reduction="none").flatten(1)
    inside = (masks.flatten(1) > 0.5).float()
    area = inside.sum(1)
    return torch.where(area > 0, (bce * inside).sum(1) / area.clamp_min(1.0), bce.mean(1))


def _scalars(terms: dict) -> dict:
    return {k: v.detach() for k, v in terms.items() if k != "loss"}


class SegmentationLoss(nn.Module):
    """BCE + Dice on defect logits (smp's losses); Dice pools the whole batch so good images count."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0):
        super().__init__()
        self.bce_weight, self.dice_weight = bce_weight, dice_weight
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        dice = self.dice(logits, masks)
        return {"loss": self.bce_weight * bce + self.dice_weight * dice, "bce": bce, "dice": dice}


def paired_targets(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The defect-free target and per-pixel weight of each sample of a batch (DRAEM's reconstruction, DeSTSeg's
    student).

    Synthetic samples: the generator's paired good image (weight 1). Real good
    images: themselves. Real defect images have no defect-free twin: they are
    their own target outside the defect only (weight 1 - mask).
    """
    targets = batch.images.clone()
    weights = 1.0 - batch.masks
    goods = getattr(batch, "synthetic_goods", None)
    if goods is not None:
        syn = batch.synthetic
        targets[syn] = goods.to(targets.dtype)
        weights[syn] = 1.0
    return targets, weights


# ----------------------------------------------------------------------------- smp U-Net and DeepLabV3


def _smp_divisor(config: dict) -> int:
    return 2 ** int(config.get("encoder_depth", 5))


def _smp_step(config: dict, loss: dict, steps: int, device) -> StepFn:
    criterion = SegmentationLoss(**(loss or {})).to(device)

    def segment_step(net, batch):
        logits = net(batch.images)
        terms = criterion(logits, batch.masks)
        return terms["loss"], _scalars(terms), mask_losses(logits, batch.masks)

    return segment_step


def _smp_builder(name: str):
    def build(in_channels: int, config: dict, weights: str | None = None, rebuild: bool = False) -> nn.Module:
        return _build_smp(name, in_channels, config, config.get("encoder", "resnet18"), weights)

    return build


# ----------------------------------------------------------------------------- DRAEM


def draem_config(config: dict[str, Any]) -> DraemConfig:
    known = set(DraemConfig.__dataclass_fields__)
    return DraemConfig(**{k: v for k, v in config.items() if k in known})


def _build_draem(in_channels: int, config: dict, weights: str | None = None, rebuild: bool = False) -> nn.Module:
    if weights:
        raise InputError("--weights: DRAEM has no pretrained encoder; it always starts from random weights")
    return Draem(in_channels, draem_config(config))


def _draem_step(config: dict, loss: dict, steps: int, device) -> StepFn:
    criterion = DraemLoss(draem_config(config)).to(device)

    def draem_step(net, batch):
        reconstruction, logits = net(batch.images)
        targets, weights = paired_targets(batch)
        terms = criterion(reconstruction, targets, logits, batch.masks, weights)
        return terms["loss"], _scalars(terms), mask_losses(logits, batch.masks)

    return draem_step


# ----------------------------------------------------------------------------- DeSTSeg


def _build_destseg(in_channels: int, config: dict, weights: str | None = None, rebuild: bool = False) -> nn.Module:
    return DeSTSeg(in_channels, destseg_config(config), weights=weights, rebuild=rebuild)


def _destseg_step(config: dict, loss: dict, steps: int, device) -> StepFn:
    """The first `student_steps` calls train the student, the rest the head (one call per optimiser step). Only
    the head gives defect logits, so steering reads the head stage's rows (the student stage gives None)."""
    first = destseg_config(config).student_steps(steps)
    done = [0]

    def destseg_step(net, batch):
        stage = "student" if done[0] < first else "head"
        done[0] += 1
        targets, weights = paired_targets(batch)
        terms = net(batch.images, clean=targets, weight=weights, masks=batch.masks, stage=stage)
        logits = terms.pop("logits", None)
        return terms["loss"], _scalars(terms), None if logits is None else mask_losses(logits, batch.masks)

    return destseg_step


def _destseg_optimizer(model: nn.Module, steps: int, lr: float, weight_decay: float, config: dict,
                       warmup_steps: int = 0):
    return stage_schedule(model, steps, lr, weight_decay, destseg_config(config), warmup_steps)


SPECS: dict[str, SegmenterSpec] = {spec.name: spec for spec in (
    SegmenterSpec("unet", _smp_builder("unet"), _smp_divisor, _smp_step),
    SegmenterSpec("deeplabv3", _smp_builder("deeplabv3"), _smp_divisor, _smp_step),
    SegmenterSpec("draem", _build_draem, lambda config: draem_config(config).divisor, _draem_step,
                  paired_good=True),
    SegmenterSpec("destseg", _build_destseg, lambda config: destseg_config(config).divisor, _destseg_step,
                  paired_good=True, optimizer=_destseg_optimizer),
)}
MODELS = tuple(SPECS)


def segmenter_spec(name: str) -> SegmenterSpec:
    if name not in SPECS:
        raise InputError(f"--model '{name}': unknown segmenter (choose from {', '.join(MODELS)})")
    return SPECS[name]


def input_divisor(name: str, config: dict[str, Any]) -> int:
    """Height and width of the input must be multiples of this for the model to run."""
    return segmenter_spec(name).divisor(dict(config or {}))


def build_segmenter(
    name: str,
    in_channels: int,
    config: dict[str, Any] | None = None,
    encoder: str | None = None,
    weights: str | None = None,
    rebuild: bool = False,
) -> nn.Module:
    """A model taking images in [0, 1] whose forward gives defect logits (N, 1, H, W)
    (DRAEM: (reconstruction, logits)). `config` holds the model's widths (see configs/segment-*.yaml);
    `encoder` (smp models) overrides the config's."""
    config = dict(config or {})
    if encoder is not None:
        config["encoder"] = encoder
    return segmenter_spec(name).build(in_channels, config, weights, rebuild)


def _build_smp(name: str, in_channels: int, config: dict, encoder: str, weights: str | None) -> nn.Module:
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
        with hub_offline(from_cache):
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
def hub_offline(active: bool):
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
