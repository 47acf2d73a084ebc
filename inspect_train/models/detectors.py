"""Defect detectors: torchvision's FCOS, RetinaNet and Faster R-CNN on a timm backbone with a feature pyramid.

The backbone is any timm model that gives feature maps (`features_only`; default resnet18), random init unless
`weights` is a local state-dict file or the word `pretrained` (timm's weights from the local cache, never
downloaded). Its `levels` are timm feature indices (1 = stride 4, 2 = stride 8, ...); a torchvision feature
pyramid of `fpn_channels` sits on them, with `extra_levels` coarser maps (P6, P7) for the one-stage heads and a
max-pooled one for Faster R-CNN's proposals. Anchors follow the strides: FCOS places one point per location
(size = stride, torchvision's own rule for its levels); RetinaNet and Faster R-CNN place `anchor_scale` x stride
boxes at three octave scales (RetinaNet) or one (Faster R-CNN), each at `aspect_ratios`.

Images are never resized inside the model: torchvision's transform is set to the training size and a neutral
normalisation, and `Detector` standardises [0, 1] input itself with buffers saved in its state dict, like every
other model here. `Detector` speaks class indices 0..K-1 (the defect types in order); Faster R-CNN's background
class 0 is hidden inside it.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Tuple

import timm
import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from inspect_train.errors import InputError
from inspect_train.models.classifier import _hub_offline, _load_file
from inspect_train.models.normalise import IMAGENET_MEAN, IMAGENET_STD, PRETRAINED, fit_channels
from inspect_train.models.registry import DETECTORS

# Defaults of every key a detector config may set (configs/detect-*.yaml `models:` overrides them).
DEFAULTS: dict[str, Any] = {
    "encoder": "resnet18",
    "levels": [2, 3, 4],  # timm feature indices: strides 8, 16, 32
    "extra_levels": 2,  # P6, P7 on top (FCOS, RetinaNet); Faster R-CNN always adds one max-pooled level
    "fpn_channels": 128,  # a multiple of 32 (the heads' GroupNorm)
    "head_convs": 4,  # FCOS: conv layers per head branch
    "anchor_scale": 4.0,  # RetinaNet / Faster R-CNN: anchor size = anchor_scale * stride
    "aspect_ratios": [0.5, 1.0, 2.0],
    "roi_size": 256,  # Faster R-CNN: width of the box head's two fully connected layers
    "score_threshold": 0.05,  # boxes below this score are dropped before evaluation
    "nms_iou": 0.6,
    "detections": 100,  # at most this many boxes per image (COCO's maxDets)
}


def detector_config(config: dict | None) -> dict[str, Any]:
    """The full config: DEFAULTS overridden by `config`; unknown keys are refused by name."""
    config = dict(config or {})
    config.pop("lr", None)  # a per-model learning rate lives beside the widths (as for segmenters)
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise InputError(f"detector config: unknown key(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    merged = {**DEFAULTS, **config}
    merged["levels"] = [int(v) for v in merged["levels"]]
    if not merged["levels"] or merged["levels"] != sorted(set(merged["levels"])) or merged["levels"][0] < 0:
        raise InputError(f"detector config: levels must be increasing feature indices (got {merged['levels']})")
    if int(merged["fpn_channels"]) % 32 or int(merged["fpn_channels"]) < 32:
        raise InputError(f"detector config: fpn_channels must be a multiple of 32 (got {merged['fpn_channels']})")
    if not 0 <= int(merged["extra_levels"]) <= 2:
        raise InputError(f"detector config: extra_levels must be 0, 1 or 2 (got {merged['extra_levels']})")
    return merged


class ExtraLevels(ExtraFPNBlock):
    """`count` (1-2) coarser pyramid levels, each a stride-2 convolution of the one before (P6 from P5, P7 from
    relu(P6)), as torchvision's P6P7 block, which always adds both."""

    def __init__(self, channels: int, count: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(count))
        for conv in self.convs:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, results: List[torch.Tensor], x: List[torch.Tensor],
                names: List[str]) -> Tuple[List[torch.Tensor], List[str]]:
        top = results[-1]
        results, names = list(results), list(names)
        for i, conv in enumerate(self.convs):
            top = conv(top if i == 0 else torch.relu(top))
            results.append(top)
            names.append("p" + str(len(names)))
        return results, names


class PyramidBackbone(nn.Module):
    """A timm feature extractor and a torchvision feature pyramid: image -> OrderedDict of maps, fine to coarse."""

    def __init__(self, encoder: str, in_chans: int, levels: list[int], channels: int, extra: str | int,
                 weights: str | None = None):
        super().__init__()
        self.body = timm_features(encoder, in_chans, levels, weights)
        self.strides = [int(s) for s in self.body.feature_info.reduction()]
        blocks = LastLevelMaxPool() if extra == "pool" else (ExtraLevels(channels, int(extra)) if extra else None)
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), channels, extra_blocks=blocks)
        self.out_channels = channels
        extra_count = 1 if extra == "pool" else int(extra)
        self.strides += [self.strides[-1] * 2 ** (i + 1) for i in range(extra_count)]
        self.level_names = [str(i) for i in range(len(levels))]

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = self.body(x)
        named: Dict[str, torch.Tensor] = OrderedDict()
        for i, f in enumerate(features):
            named[str(i)] = f
        return self.fpn(named)


def timm_features(encoder: str, in_chans: int, levels: list[int], weights: str | None) -> nn.Module:
    """timm `encoder` as a feature extractor at `levels`, random init, timm's cached weights, or a local file."""
    kwargs = dict(features_only=True, out_indices=tuple(levels), in_chans=in_chans)
    try:
        if weights is not None and str(weights) == PRETRAINED:
            try:
                with _hub_offline():
                    return timm.create_model(encoder, pretrained=True, **kwargs)
            except (OSError, RuntimeError, ValueError) as err:
                if "Unknown model" in str(err):
                    raise
                raise InputError(
                    f"--weights pretrained: pretrained weights for '{encoder}' are not in the local timm/Hugging "
                    f"Face cache ({type(err).__name__}); fetch them on a machine with internet or pass --weights "
                    "FILE") from None
        net = timm.create_model(encoder, pretrained=False, **kwargs)
    except InputError:
        raise
    except (RuntimeError, ValueError, IndexError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"--encoder '{encoder}' with levels {list(levels)}: not a timm feature extractor ({first})")\
            from None
    if weights is not None:
        _load_file(net, Path(weights).expanduser(), in_chans)
    return net


def check_detector_args(name: str, encoder: str, weights: str | None) -> None:
    """Cheap checks before any data is read: a known detector and backbone, an existing weights file."""
    if name not in DETECTORS:
        raise InputError(f"--model '{name}': unknown detector (choose from {', '.join(DETECTORS)})")
    if encoder not in timm.list_models() and encoder.split(".")[0] not in timm.list_models():
        raise InputError(f"--encoder '{encoder}' is not a timm model name (e.g. resnet18, resnet34, efficientnet_b0)")
    if weights is not None and str(weights) != PRETRAINED and not Path(weights).expanduser().is_file():
        raise InputError(f"{weights}: weights file not found (a local state-dict file for the backbone, or "
                         f"'{PRETRAINED}' for timm's local cache; nothing is downloaded)")


def input_statistics(in_chans: int, weights: str | None) -> tuple[tuple, tuple]:
    """What the backbone's input is standardised with: ImageNet's for pretrained weights, else a neutral spread."""
    if weights is None:
        return (0.5,) * in_chans, (0.25,) * in_chans
    return fit_channels(IMAGENET_MEAN, IMAGENET_STD, in_chans)


class Detector(nn.Module):
    """[0, 1] images (N, C, H, W) -> training: the detector's loss terms; eval: per image
    {"boxes": (M, 4) x0 y0 x1 y1 in pixels, "scores": (M,), "labels": (M,) class indices}.

    Targets are per image {"boxes": (M, 4), "labels": (M,) class indices}; an image without a box is a good one.
    """

    def __init__(self, net: nn.Module, label_offset: int, mean, std):
        super().__init__()
        self.net = net
        self.label_offset = int(label_offset)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        x = list((images - self.mean) / self.std)
        if self.training:
            if targets is None:
                raise ValueError("a detector in training mode needs targets")
            shifted = [{"boxes": t["boxes"], "labels": t["labels"] + self.label_offset} for t in targets]
            return self.net(x, shifted)
        out = self.net(x)
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - self.label_offset} for o in out]


def build_detector(name: str, in_chans: int, num_classes: int, size: tuple[int, int], config: dict | None = None,
                   weights: str | None = None) -> Detector:
    """Detector `name` for `num_classes` defect types on (H, W) = `size` images of `in_chans` channels."""
    cfg = detector_config(config)
    check_detector_args(name, cfg["encoder"], weights)
    if num_classes < 1:
        raise InputError("a detector needs at least one defect type")
    channels = int(cfg["fpn_channels"])
    extra = "pool" if name == "fasterrcnn" else int(cfg["extra_levels"])
    backbone = PyramidBackbone(cfg["encoder"], in_chans, cfg["levels"], channels, extra, weights)
    h, w = int(size[0]), int(size[1])
    common = dict(min_size=min(h, w), max_size=max(h, w), image_mean=[0.0] * in_chans, image_std=[1.0] * in_chans)
    ratios = tuple(float(r) for r in cfg["aspect_ratios"])
    strides = backbone.strides
    group_norm = partial(nn.GroupNorm, 32)
    if name == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        head = FCOSHead(channels, 1, num_classes, num_convs=int(cfg["head_convs"]))
        net = FCOS(backbone, num_classes, anchor_generator=anchors, head=head,
                   score_thresh=float(cfg["score_threshold"]), nms_thresh=float(cfg["nms_iou"]),
                   detections_per_img=int(cfg["detections"]), **common)
        offset = 0
    elif name == "retinanet":
        scale = float(cfg["anchor_scale"])
        sizes = tuple(tuple(scale * s * 2 ** (k / 3) for k in range(3)) for s in strides)
        anchors = AnchorGenerator(sizes, (ratios,) * len(strides))
        head = RetinaNetHead(channels, anchors.num_anchors_per_location()[0], num_classes, norm_layer=group_norm)
        net = RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head,
                        score_thresh=float(cfg["score_threshold"]), nms_thresh=float(cfg["nms_iou"]),
                        detections_per_img=int(cfg["detections"]), **common)
        offset = 0
    else:
        scale = float(cfg["anchor_scale"])
        anchors = AnchorGenerator(tuple((scale * s,) for s in strides), (ratios,) * len(strides))
        pool = MultiScaleRoIAlign(featmap_names=backbone.level_names, output_size=7, sampling_ratio=2)
        width = int(cfg["roi_size"])
        net = FasterRCNN(backbone, None, rpn_anchor_generator=anchors, box_roi_pool=pool,
                         box_head=TwoMLPHead(channels * 7 * 7, width),
                         box_predictor=FastRCNNPredictor(width, num_classes + 1),
                         box_score_thresh=float(cfg["score_threshold"]), box_nms_thresh=float(cfg["nms_iou"]),
                         box_detections_per_img=int(cfg["detections"]), **common)
        offset = 1  # torchvision's class 0 is the background
    return Detector(net, offset, *input_statistics(in_chans, weights))


class ScriptedDetector(nn.Module):
    """A trained Detector in a form TorchScript compiles (torch.jit.script, not a trace: the number of boxes depends
    on the image): [0, 1] images (N, C, H, W) -> per image {"boxes", "scores", "labels" (class indices)}."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.net = detector.net
        self.label_offset = detector.label_offset
        self.register_buffer("mean", detector.mean.detach().clone())
        self.register_buffer("std", detector.std.detach().clone())

    def forward(self, images: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        x = [(image - self.mean[0]) / self.std[0] for image in images.unbind(0)]
        if torch.jit.is_scripting():
            found = self.net(x)[1]  # a scripted torchvision detector returns (losses, detections)
        else:
            found = self.net(x)
        out: List[Dict[str, torch.Tensor]] = []
        for item in found:
            out.append({"boxes": item["boxes"], "scores": item["scores"], "labels": item["labels"] - self.label_offset})
        return out
