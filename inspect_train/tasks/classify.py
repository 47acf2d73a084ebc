"""The classify task: per partition, train a classifier on the base set (+ fresh synthetic defects every
batch) and the real-only baseline with the same model, schedule and seed; evaluate both on the test set.

Classes are the defect types (as in the DFMGAN paper), plus `good` with
`with_good` (then train/good joins training and test/good joins the test set).
The schedule is a fixed number of steps for both arms; nothing is chosen on
test data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix

from inspect_train.data.category import CategoryData
from inspect_train.errors import InputError
from inspect_train.models import build_classifier
from inspect_train.online import GOOD, OnlineBatches, RealPool
from inspect_train.protocol import get_partition
from inspect_train.distributed import DistContext
from inspect_train.tasks.common import (confusion_image, debug_dump, gather_union, make_optimizer, open_writer, prepare_model,
                                        sample_grid, seed_everything, train_fixed_steps, finish_training)

METRICS = ["accuracy", "balanced_accuracy"]
REAL_AUG = {"classic"}  # --aug values that augment real images instead of adding synthetic ones


@dataclass
class ClassifySettings:
    model: str = "resnet34"
    weights: str | None = None
    batch_size: int = 32
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    synthetic_ratio: float = 0.5
    real_sampling: str = "balanced"
    with_good: bool = False
    eval_batch_size: int = 64
    log_every: int = 10
    grid_every: int = 250
    save_models: bool = True
    progress: bool = True
    generator_options: dict = field(default_factory=dict)


def class_names_for(defect_types: list[str], with_good: bool) -> list[str]:
    names = sorted(defect_types)
    if with_good:
        if GOOD in names:
            raise InputError(f"a defect type is called '{GOOD}'; it clashes with the good class of --with-good")
        names.append(GOOD)
    if len(names) < 2:
        raise InputError(f"classification needs at least two classes, the data has {names}; pass --with-good")
    return names


def test_split(data: CategoryData, part: dict, class_names: list[str]):
    """uint8 images, labels and (class, name) of the partition's test set; test/good with the good class."""
    images, labels, names = [], [], []
    for index, cls in enumerate(class_names):
        subset = data.test_good if cls == GOOD else data.defects[cls].select(part["defects"][cls]["test"])
        if cls == GOOD and len(subset) == 0:
            raise InputError(f"{data.index.folder / 'test' / 'good'}: no test/good images to evaluate the good class")
        images.append(subset.images)
        labels += [index] * len(subset)
        names += [(cls, n) for n in subset.names]
    return torch.cat(images), torch.tensor(labels, dtype=torch.long), names


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, class_names: list[str], device, batch_size: int = 64) -> dict:
    """accuracy, balanced accuracy, per-class accuracy (recall) and the confusion matrix (rows true)."""
    model.eval()
    preds = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].to(device).float().div_(255.0)
        preds.append(model(chunk).argmax(1).cpu())
    pred = torch.cat(preds).numpy()
    true = labels.numpy()
    matrix = confusion_matrix(true, pred, labels=list(range(len(class_names))))
    support = matrix.sum(1)
    per_class = {name: float(matrix[i, i] / support[i]) for i, name in enumerate(class_names) if support[i] > 0}
    return {
        "accuracy": float((pred == true).mean()),
        "balanced_accuracy": float(np.mean(list(per_class.values()))),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": list(class_names),
        "n_test": int(len(true)),
    }


def _step_fn(model, batch):
    logits = model(batch.images)
    loss = F.cross_entropy(logits, batch.labels)
    with torch.no_grad():
        hit = (logits.argmax(1) == batch.labels).float()
        scalars = {}
        real, syn = ~batch.synthetic, batch.synthetic
        if real.any():
            scalars["accuracy_real"] = hit[real].mean()
        if syn.any():
            scalars["accuracy_synthetic"] = hit[syn].mean()
    return loss, scalars


def train_arm(
    arm: str,
    aug: str,
    data: CategoryData,
    part: dict,
    class_names: list[str],
    generator,
    settings: ClassifySettings,
    seed: int,
    device: torch.device,
    log_dir: Path | None,
    ctx: DistContext | None = None,
):
    """Train one model for one arm ('baseline' or the aug name); returns (model, OnlineBatches, writer).

    Under torchrun each rank draws its share of the batch (real and synthetic) from its own seed; DDP averages
    the gradients, so the global batch and the schedule are those of one process. Only rank 0 logs.
    """
    ctx = ctx or DistContext(device=device)
    base_names = {t: part["defects"][t]["base"] for t in class_names if t != GOOD}
    pool = RealPool(data, base_names, class_names, device)
    batches = OnlineBatches(
        pool, generator, batch_size=ctx.local_batch(settings.batch_size), synthetic_ratio=settings.synthetic_ratio,
        seed=seed + ctx.seed_offset(), device=device, augment_real=aug in REAL_AUG, real_sampling=settings.real_sampling,
    )
    seed_everything(seed)  # same initial weights in both arms (and on every rank; DDP also broadcasts rank 0's)
    model = build_classifier(settings.model, len(class_names), data.channels, settings.weights).to(device)
    model = prepare_model(model, ctx)
    optimizer, scheduler = make_optimizer(model, settings.steps, settings.lr, settings.weight_decay,
                                          min(settings.warmup_steps, settings.steps // 5))
    writer = open_writer(log_dir) if log_dir is not None and ctx.is_main else None

    def on_batch(step: int, batch) -> None:
        if writer is None or (step % max(1, settings.grid_every) and step != settings.steps - 1):
            return
        if batch.synthetic.any():
            syn = batch.synthetic
            writer.add_image("fed/synthetic_with_masks", sample_grid(batch.images[syn], batch.masks[syn]), step)
        if step == 0:
            real = ~batch.synthetic
            writer.add_image("fed/real", sample_grid(batch.images[real], batch.masks[real]), step)

    try:
        train_fixed_steps(model, batches, settings.steps, _step_fn, optimizer, scheduler, writer,
                          desc=f"P{part['partition']} {arm}", log_every=settings.log_every, on_batch=on_batch,
                          progress=settings.progress and ctx.is_main)
    finally:
        if writer is not None:
            writer.flush()
    return finish_training(model, ctx), batches, writer


def run_partition(
    data: CategoryData,
    manifest: dict,
    partition: int,
    aug: str,
    settings: ClassifySettings,
    seed: int,
    device: torch.device,
    out_dir: Path,
    make_generator: Callable[[int, dict[str, list[str]]], object] | None,
    baseline: bool = True,
    ctx: DistContext | None = None,
) -> dict:
    """One partition: the baseline (unless disabled) and the augmented arm, each evaluated on the test split.

    Under torchrun every rank trains; rank 0 alone evaluates and writes, and its entry is the one to keep
    (counts of what was served are summed over ranks).
    """
    ctx = ctx or DistContext(device=device)
    part = get_partition(manifest, partition)
    class_names = class_names_for(list(part["defects"]), settings.with_good)
    test_images, test_labels, _ = test_split(data, part, class_names)
    arms = ([("baseline", "none")] if baseline else []) + [(aug, aug)]
    entry: dict = {"partition": partition, "baseline": None, "augmented": None}
    used: set = set()
    for arm, arm_aug in arms:
        generator = None
        if arm_aug not in ("none", *REAL_AUG):
            base_names = {t: part["defects"][t]["base"] for t in class_names if t != GOOD}
            generator = make_generator(partition, base_names)
        model, batches, writer = train_arm(arm, arm_aug, data, part, class_names, generator, settings, seed, device,
                                           out_dir / "tb" / f"{arm}-p{partition}", ctx)
        debug_dump(ctx, model, f"{arm}-p{partition}")
        used |= gather_union(ctx, set(batches.served_real))
        if not ctx.is_main:
            ctx.barrier()  # rank 0 evaluates and saves
            continue
        metrics = evaluate(model, test_images, test_labels, class_names, device, settings.eval_batch_size)
        if writer is not None:
            writer.add_image("eval/confusion_matrix", confusion_image(metrics["confusion_matrix"], class_names),
                             settings.steps)
            for key in METRICS:
                writer.add_scalar(f"eval/{key}", metrics[key], settings.steps)
            for name, value in metrics["per_class_accuracy"].items():
                writer.add_scalar(f"eval/per_class/{name}", value, settings.steps)
            writer.close()
        if settings.save_models:
            (out_dir / "models").mkdir(parents=True, exist_ok=True)
            torch.save({"model": settings.model, "classes": class_names, "state_dict": model.state_dict()},
                       out_dir / "models" / f"{arm}-p{partition}.pt")
        key = "baseline" if arm == "baseline" else "augmented"
        entry[key] = metrics
        entry[f"{key}_epochs"] = round(batches.epochs * ctx.world_size, 2)
        if key == "augmented":
            entry["synthetic_samples_seen"] = batches.synthetic_seen * ctx.world_size
        ctx.barrier()
    # The audit trail of the protocol: every real image any arm trained on, as (class, file name).
    entry["real_images_used"] = [list(item) for item in sorted(used)]
    return entry


def steps_for_epochs(epochs: float, data: CategoryData, part: dict, settings: ClassifySettings) -> int:
    """An epoch is one pass over the partition's real training images at the full batch size."""
    class_names = class_names_for(list(part["defects"]), settings.with_good)
    pool = sum(len(part["defects"][t]["base"]) for t in class_names if t != GOOD)
    pool += len(data.train_good) if settings.with_good else 0
    return max(1, math.ceil(epochs * pool / settings.batch_size))
