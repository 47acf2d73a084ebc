"""Every downstream model by name, and one architecture record that rebuilds it.

Training builds a model with `create_classifier` / `create_segmenter` (optionally from pretrained weights);
a checkpoint stores `architecture(...)`, and the record's task rebuilds the same network from it with random
weights for the stored state dict to fill (`build_from_architecture`, see inspect_train.models.checkpoint).
Classifiers are any timm model name; segmenters are the names in SEGMENTERS; detectors (`create_detector`) the
names in DETECTORS, on a timm backbone.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from inspect_train.errors import InputError
from inspect_train.models.classifier import build_classifier
from inspect_train.models.segmenters import MODELS as SEGMENTERS, build_segmenter

DETECTORS = ("fcos", "retinanet", "fasterrcnn")


def create_classifier(name: str, num_classes: int, in_chans: int = 3, weights: str | None = None) -> nn.Module:
    """A timm classifier for [0, 1] images with a `num_classes` head (random init unless `weights`)."""
    return build_classifier(name, num_classes, in_chans, weights)


def create_segmenter(name: str, in_chans: int, config: dict | None = None, weights: str | None = None,
                     rebuild: bool = False) -> nn.Module:
    """A segmenter from SEGMENTERS for [0, 1] images; `config` holds its widths (and `encoder` for smp models).
    `rebuild`: the network of a model file, for its state dict to fill (no pretrained weights are looked up)."""
    if name not in SEGMENTERS:
        raise InputError(f"--model '{name}': unknown segmenter (choose from {', '.join(SEGMENTERS)})")
    config = dict(config or {})
    return build_segmenter(name, in_chans, config, weights=weights, rebuild=rebuild)


def create_detector(name: str, in_chans: int, num_classes: int, size: tuple[int, int], config: dict | None = None,
                    weights: str | None = None) -> nn.Module:
    """A detector from DETECTORS for [0, 1] images of (H, W) = `size`, finding `num_classes` defect types;
    `config` holds its backbone (`encoder`), pyramid and head settings (see inspect_train.models.detectors)."""
    from inspect_train.models.detectors import build_detector  # import cycle: detectors imports DETECTORS from here

    if name not in DETECTORS:
        raise InputError(f"--model '{name}': unknown detector (choose from {', '.join(DETECTORS)})")
    return build_detector(name, in_chans, num_classes, size, config, weights)


def architecture(task: str, name: str, in_chans: int, num_classes: int | None = None,
                 config: dict | None = None, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """What a checkpoint records to rebuild the network: task, model name, input channels, and what the task's
    network takes of a head size (`num_classes`), widths (`config`) and input size (`size`)."""
    record: dict[str, Any] = {"task": task, "name": name, "in_chans": int(in_chans)}
    if num_classes is not None:
        record["num_classes"] = int(num_classes)
    if config is not None:
        record["config"] = dict(config)
    if size is not None:
        record["size"] = [int(size[0]), int(size[1])]
    return record

