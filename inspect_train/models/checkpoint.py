"""The shipped model file: everything needed to run a trained classifier, segmenter or detector on new images.

One file per trained arm (`OUT/P<k>/<arm>/model.pt`), read by `predict` and `export`. It holds the network's
own state dict (for a classifier exactly what `timm.create_model(name, num_classes=..., in_chans=...)` loads,
without our wrapper's prefix), the input statistics the wrapper standardises with, the classes in output
order, the resolution and channels the model was trained at, a segmenter's decision threshold (chosen on
training images only), what it was trained on, and the package versions.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inspect_train.atomic import write_atomic
from inspect_train.checkpoint import load_weights_only
from inspect_train.errors import InputError
from inspect_train.models.normalise import Normalised
from inspect_train.tasks.registry import UnknownTask, get_task, task_names

FORMAT = "inspect-train-model"
VERSION = 1
REQUIRED = ("task", "architecture", "classes", "resolution", "channels", "state_dict")


def package_versions() -> dict[str, str]:
    """Versions of the packages a result or a model depends on (recorded, never enforced)."""
    versions = {}
    for name in ("inspect-train", "torch", "torchvision", "timm", "segmentation-models-pytorch", "scikit-learn",
                 "numpy", "torchmetrics", "pycocotools"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def save_model(path: str | Path, model: nn.Module, *, architecture: dict, classes: list[str],
               resolution: tuple[int, int], channels: int, threshold: dict | None = None,
               trained_on: dict | None = None) -> Path:
    """Write the model file atomically (temporary file, then rename)."""
    net, statistics = (model.net, model.statistics()) if isinstance(model, Normalised) else (model, None)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "task": architecture["task"],
        "architecture": architecture,
        "classes": list(classes),
        "resolution": [int(resolution[0]), int(resolution[1])],
        "channels": int(channels),
        "normalisation": statistics,
        "threshold": threshold,
        "trained_on": trained_on or {},
        "packages": package_versions(),
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    return write_atomic(path, lambda tmp: torch.save(record, tmp))


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The checked record of a model file, or one line saying why the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    record = load_weights_only(path, "model file")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        hint = " (a DFMGAN generator checkpoint: use `generate`)" if isinstance(record, dict) and "kind" in record else ""
        raise InputError(f"{path}: not an inspect-train model file{hint}; use OUT/P<k>/<arm>/model.pt of a "
                         "classify, segment or detect run")
    if int(record.get("version", 0)) > VERSION:
        raise InputError(f"{path}: model file version {record['version']} is newer than this inspect-train reads "
                         f"({VERSION}); upgrade inspect-train")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise InputError(f"{path}: model file lacks {', '.join(missing)}")
    return record


def model_task(record: dict[str, Any], path: str | Path):
    """The registered task that made a model file; one it does not know is one line naming the file."""
    try:
        return get_task(record["task"])
    except UnknownTask:
        raise InputError(f"{path}: unknown task '{record['task']}' in the model file "
                         f"(known: {', '.join(task_names())})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(the network in eval mode taking [0, 1] images, its record without the weights)."""
    record = read_model_file(path)
    model = model_task(record, path).build_from_architecture(record["architecture"])
    net = model.net if isinstance(model, Normalised) else model
    try:
        net.load_state_dict(record["state_dict"])
    except RuntimeError as err:
        raise InputError(f"{path}: the weights do not fit the recorded architecture "
                         f"({str(err).splitlines()[0]})") from None
    if isinstance(model, Normalised) and record.get("normalisation"):
        stats = record["normalisation"]
        model.mean.copy_(torch.tensor(stats["mean"]).view(1, -1, 1, 1))
        model.std.copy_(torch.tensor(stats["std"]).view(1, -1, 1, 1))
    meta = {k: v for k, v in record.items() if k != "state_dict"}
    return model.to(device).eval(), meta
