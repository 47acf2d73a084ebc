"""DeSTSeg (Zhang et al., CVPR 2023): a frozen teacher, a denoising student and a segmentation head on their
feature differences.

- Teacher: the first three residual stages of a timm ResNet-18 (strides 4, 8, 16), frozen, meant to carry
  ImageNet features (from the local timm / Hugging Face cache, or a state-dict file; see `build_teacher`).
- Student: an encoder-decoder (a randomly initialised ResNet-18 encoder, a decoder of residual blocks without
  skip connections) whose three decoder outputs are trained to reproduce the teacher's features of the *good*
  image from the *defective* input (cosine distance per feature pixel): where a defect is, it answers with the
  defect-free features while the teacher, seeing the defect, does not.
- Segmentation head: on the product of the L2-normalised teacher and student features of each level (upsampled
  to stride 4 and stacked), two residual blocks and an ASPP module give one logit per pixel at stride 4,
  upsampled to the input; trained with focal + L1 loss against the defect masks, teacher and student frozen.

Training is in two stages within one schedule: the first `student_fraction` of the steps trains the student
only, the rest the head only (each with its own cosine learning rate; `stage_schedule`). forward(x in [0, 1])
gives the defect logits (N, 1, H, W); with `clean=` it gives the stage's loss terms instead.

Widths are configurable (tests run a 16-wide network through the same code); the defaults are the paper's
ResNet-18 (64, 128, 256, 512) and a 256-wide head.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.losses import FocalLoss

from inspect_train.errors import InputError
from inspect_train.models.normalise import IMAGENET_MEAN, IMAGENET_STD, PRETRAINED, fit_channels

RESNET18_WIDTHS = (64, 128, 256, 512)
_warned: set[str] = set()


@dataclass
class DestsegConfig:
    widths: tuple = RESNET18_WIDTHS  # ResNet-18 stage widths of teacher and student (the teacher uses three)
    stem_width: int = 64
    head_width: int = 256
    aspp_rates: tuple = (6, 12, 18)  # dilations of the ASPP's 3x3 branches at stride 4
    student_fraction: float = 0.6  # share of the steps that train the student (the paper: 6000 of 10000)
    head_lr: float | None = None  # the head's peak learning rate (default: the model's lr)
    focal_gamma: float = 4.0
    focal_alpha: float | None = None
    l1_weight: float = 1.0
    teacher: str = "imagenet"  # imagenet: pretrained from the cache when present (else random, warned); random

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        self.aspp_rates = tuple(int(r) for r in self.aspp_rates)
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise InputError(f"destseg widths: four positive stage widths expected (got {list(self.widths)})")
        if not 0.0 < float(self.student_fraction) < 1.0:
            raise InputError(f"destseg student_fraction: between 0 and 1 exclusive (got {self.student_fraction})")
        if self.teacher not in ("imagenet", "random"):
            raise InputError(f"destseg teacher: 'imagenet' or 'random' (got {self.teacher!r})")

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this: the student's encoder halves the size five times."""
        return 32

    def student_steps(self, steps: int) -> int:
        """Steps of the first stage out of `steps` (at least one for each stage when there are two steps)."""
        if steps < 2:
            return steps
        return min(steps - 1, max(1, round(float(self.student_fraction) * steps)))


def destseg_config(config: dict) -> DestsegConfig:
    known = set(DestsegConfig.__dataclass_fields__)
    return DestsegConfig(**{k: v for k, v in config.items() if k in known})


def _resnet(in_channels: int, config: DestsegConfig, out_indices: tuple, pretrained: bool = False) -> nn.Module:
    kwargs = {} if pretrained else {"channels": config.widths, "stem_width": config.stem_width}
    return timm.create_model("resnet18", pretrained=pretrained, features_only=True, out_indices=out_indices,
                             in_chans=in_channels, **kwargs)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def build_teacher(in_channels: int, config: DestsegConfig, weights: str | None, rebuild: bool) -> nn.Module:
    """The frozen teacher: ResNet-18 stages 1-3.

    weights None (training): timm's pretrained ResNet-18 from the local cache when it is there, else random
    weights with a warning (config `teacher: random` asks for random weights without one); 'pretrained': the
    cache or an error; a file: a ResNet-18 state dict. `rebuild` (a model file's network, whose state dict
    fills every weight): random, nothing looked up."""
    from inspect_train.models.segmenters import hub_offline, load_encoder_weights  # segmenters imports this module

    paper_widths = config.widths == RESNET18_WIDTHS and config.stem_width == 64
    if rebuild or (weights is None and config.teacher == "random"):
        return _resnet(in_channels, config, (1, 2, 3))
    if weights is not None and str(weights) != PRETRAINED:
        teacher = _resnet(in_channels, config, (1, 2, 3))
        load_encoder_weights(teacher, Path(weights).expanduser())
        return teacher
    why = None
    if paper_widths:
        try:
            with hub_offline(True):
                return _resnet(in_channels, config, (1, 2, 3), pretrained=True)
        except Exception as err:  # noqa: BLE001 - any miss of the cache is the same answer
            why = f"no pretrained resnet18 in the local timm / Hugging Face cache ({type(err).__name__})"
    else:
        why = f"its widths {list(config.widths)} (stem {config.stem_width}) are not resnet18's"
    if weights is not None:  # --weights pretrained: the user asked for ImageNet features
        raise InputError(f"--weights pretrained: the DeSTSeg teacher cannot be pretrained: {why}; fetch the "
                         "weights on a machine with internet or pass --weights FILE (a resnet18 state dict)")
    _warn_once(f"DeSTSeg teacher: {why}; it is RANDOMLY INITIALISED, so the student imitates random features, "
               "not ImageNet ones (pass --weights FILE with a resnet18 state dict, or put timm's resnet18 in the "
               "cache)")
    return _resnet(in_channels, config, (1, 2, 3))


class _Residual(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (projected) shortcut, then ReLU: a ResNet basic block."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class Student(nn.Module):
    """ResNet-18 encoder (stages 1-4) and a decoder without skips; gives features like the teacher's stages 3, 2,
    1 (returned shallow first, as the teacher's)."""

    def __init__(self, in_channels: int, config: DestsegConfig):
        super().__init__()
        self.encoder = _resnet(in_channels, config, (4,))
        w = config.widths
        self.decoder = nn.ModuleList([_Residual(w[3], w[2]), _Residual(w[2], w[1]), _Residual(w[1], w[0])])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.encoder(x)[-1]
        out = []
        for block in self.decoder:
            y = block(F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False))
            out.append(y)
        return out[::-1]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, dilated 3x3 branches and image pooling, fused by a 1x1."""

    def __init__(self, cin: int, cout: int, rates: tuple):
        super().__init__()
        def branch(k: int, d: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, padding=0 if k == 1 else d, dilation=d, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.branches = nn.ModuleList([branch(1, 1), *(branch(3, r) for r in rates)])
        self.pool = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(cout * (len(rates) + 2), cout, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, *x.shape[-2:])
        return self.fuse(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class SegmentationHead(nn.Module):
    def __init__(self, cin: int, config: DestsegConfig):
        super().__init__()
        width = config.head_width
        self.blocks = nn.Sequential(_Residual(cin, width), _Residual(width, width))
        self.aspp = ASPP(width, width, config.aspp_rates)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.aspp(self.blocks(x)))


def feature_distance(student: list[torch.Tensor], teacher: list[torch.Tensor],
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over levels of the mean cosine distance between student and teacher features per feature pixel;
    `weight` (N, 1, H, W) at image size counts some pixels only (area-averaged to each level)."""
    total = 0.0
    for s, t in zip(student, teacher):
        distance = 1.0 - F.cosine_similarity(s, t, dim=1).unsqueeze(1)
        if weight is None:
            total = total + distance.mean()
        else:
            w = F.interpolate(weight, size=distance.shape[-2:], mode="area")
            total = total + (distance * w).sum() / w.sum().clamp_min(1e-6)
    return total


class DeSTSeg(nn.Module):
    """forward(x in [0, 1]) -> defect logits (N, 1, H, W); forward(x, clean=, weight=, masks=, stage=) -> the
    stage's loss terms ('student' or 'head'), so that a DDP wrapper sees every training forward."""

    def __init__(self, in_channels: int, config: DestsegConfig | None = None, weights: str | None = None,
                 rebuild: bool = False):
        super().__init__()
        self.config = c = config or DestsegConfig()
        self.teacher = build_teacher(in_channels, c, weights, rebuild)
        self.teacher.requires_grad_(False)
        self.student = Student(in_channels, c)
        self.head = SegmentationHead(sum(c.widths[:3]), c)
        self.focal = FocalLoss(mode="binary", gamma=c.focal_gamma, alpha=c.focal_alpha)
        mean, std = fit_channels(IMAGENET_MEAN, IMAGENET_STD, in_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen, batch statistics included
        return self

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def _teacher(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return self.teacher(x)

    def head_logits(self, x: torch.Tensor, teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
        size = teacher[0].shape[-2:]
        products = [F.interpolate(F.normalize(t, dim=1) * F.normalize(s, dim=1), size=size, mode="bilinear",
                                  align_corners=False) for t, s in zip(teacher, student)]
        logits = self.head(torch.cat(products, dim=1))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, clean: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                masks: torch.Tensor | None = None, stage: str | None = None):
        z = self._standardise(x)
        if clean is None:
            return self.head_logits(x, self._teacher(z), self.student(z))
        if stage == "student":
            distance = feature_distance(self.student(z), self._teacher(self._standardise(clean)), weight)
            return {"loss": distance, "student": distance.detach()}
        if stage != "head":
            raise ValueError(f"DeSTSeg stage: 'student' or 'head' (got {stage!r})")
        self.student.eval()  # frozen in the second stage, batch statistics included
        with torch.no_grad():
            student = self.student(z)
        logits = self.head_logits(x, self._teacher(z), student)
        focal = self.focal(logits, masks)
        l1 = (torch.sigmoid(logits) - masks).abs().mean()
        return {"loss": focal + self.config.l1_weight * l1, "focal": focal.detach(), "l1": l1.detach(),
                "logits": logits.detach()}


def stage_schedule(model: nn.Module, steps: int, lr: float, weight_decay: float, config: DestsegConfig,
                   warmup_steps: int = 0):
    """AdamW over the student (first stage) and the head (second stage), each with a cosine learning rate
    from its peak to zero over its own stage and zero outside it; the frozen teacher is not optimised.
    `warmup_steps` (at most a fifth of a stage) ramps each stage's rate up linearly from its start."""
    net = getattr(model, "module", model)
    first = config.student_steps(steps)
    head_lr = float(config.head_lr if config.head_lr is not None else lr)
    optimizer = torch.optim.AdamW([{"params": list(net.student.parameters()), "lr": lr},
                                   {"params": list(net.head.parameters()), "lr": head_lr}],
                                  lr=lr, weight_decay=weight_decay)

    def cosine(done: int, length: int) -> float:
        warm = min(int(warmup_steps), length // 5)
        if done < warm:
            return (done + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (done - warm) / max(1, length - warm))))

    def student(step: int) -> float:
        return cosine(step, first) if step < first else 0.0

    def head(step: int) -> float:
        return cosine(step - first, steps - first) if step >= first else 0.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, [student, head])
