"""A partition's test images, gathered once per partition and shared by every arm (the runner, the open-set
evaluation and each task read the same object)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inspect_train.data.category import CategoryData
from inspect_train.errors import InputError
from inspect_train.online import GOOD


@dataclass
class TestSet:
    """The partition's test images: each defect type's test part (sorted by type), then test/good if a class."""

    names: list[str]  # "<type>/<file>"
    images: torch.Tensor  # uint8 (N, C, H, W)
    masks: torch.Tensor  # bool (N, 1, H, W)
    labels: torch.Tensor  # long (N,), index into classes
    classes: list[str]
    n_defect: int
    unknown: torch.Tensor | None = None  # open set: bool (N,), the held-out type's images (label -1)


def make_test_set(data: CategoryData, part: dict, classes: list[str]) -> TestSet:
    names, images, masks, labels = [], [], [], []
    defects = sorted(c for c in classes if c != GOOD)
    for defect in defects:
        chosen = data.defects[defect].select(part["defects"][defect]["test"])
        names += [f"{defect}/{n}" for n in chosen.names]
        images.append(chosen.images)
        masks.append(chosen.masks)
        labels += [classes.index(defect)] * len(chosen)
    n_defect = len(names)
    if GOOD in classes:
        good = data.test_good
        if len(good) == 0:
            raise InputError(f"{data.index.folder / 'test' / 'good'}: no test/good images to evaluate the good class")
        names += [f"good/{n}" for n in good.names]
        images.append(good.images)
        masks.append(torch.zeros((len(good), 1, *good.images.shape[2:]), dtype=torch.bool))
        labels += [classes.index(GOOD)] * len(good)
    return TestSet(names, torch.cat(images), torch.cat(masks), torch.tensor(labels, dtype=torch.long),
                   list(classes), n_defect)
