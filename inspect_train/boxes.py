"""Boxes from masks: one box per 8-connected component of a defect mask, labelled with the image's defect type.

`join` R > 0 (detect --box-join, generate --box-join) lets pieces at most 2R pixels apart share one box, spanning
the pieces' own pixels. Shrinking a thin crack by nearest neighbour breaks it into pieces one or two pixels apart:
Kolektor's cracks at 192x64 give 2.44 components per image against 1.40 at the full 650x256, and 1.12 with R = 1.

One rule (`components_boxes`) for `generate --format coco|yolo`, which writes these boxes to disk, and for the
detect task, which applies it on the fly: to the real base images and to every fresh synthetic sample of a
training batch, and to the test images. Coordinates are pixel edges, (x0, y0, x1, y1) with x1 = x0 + width: a
one-pixel component at column 3 spans [3, 4). A defect-free mask gives no box.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def components_boxes(mask: np.ndarray, join: int = 0) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) in pixels of each 8-connected component of a binary (H, W) mask (scipy.ndimage labels them);
    with `join` R, of each group of components whose pixels lie at most 2R pixels apart."""
    mask = np.asarray(mask).astype(bool)
    if join < 0:
        raise ValueError(f"join must be 0 or more pixels (got {join})")
    grouped = ndimage.binary_dilation(mask, structure=np.ones((2 * join + 1,) * 2, dtype=bool)) if join else mask
    labels, _ = ndimage.label(grouped, structure=np.ones((3, 3), dtype=int))
    labels[~mask] = 0  # a group's box spans its own defect pixels, not the dilation that grouped them
    return [(int(xs.start), int(ys.start), int(xs.stop - xs.start), int(ys.stop - ys.start))
            for ys, xs in (sl for sl in ndimage.find_objects(labels) if sl is not None)]


def mask_boxes(mask, join: int = 0) -> torch.Tensor:
    """float (M, 4) boxes (x0, y0, x1, y1), one per 8-connected component (group, with `join`) of a (H, W) or
    (1, H, W) mask (> 0.5)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (H, W) or (1, H, W), got shape {mask.shape}")
    boxes = [(x, y, x + w, y + h) for x, y, w, h in components_boxes(mask > 0.5, join)]
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def box_targets(masks: torch.Tensor, labels: torch.Tensor, device=None, join: int = 0) -> list[dict[str, torch.Tensor]]:
    """Per image {"boxes": (M, 4), "labels": (M,)}: every component of its mask carries the image's label.

    `masks` (B, 1, H, W), `labels` (B,) class indices. A good image (empty mask) gets no box whatever its label.
    """
    device = masks.device if device is None else device
    flat = (masks.detach() > 0.5).cpu().numpy()
    out = []
    for mask, label in zip(flat, labels.detach().cpu().tolist()):
        boxes = mask_boxes(mask, join)
        out.append({"boxes": boxes.to(device),
                    "labels": torch.full((len(boxes),), int(label), dtype=torch.long, device=device)})
    return out
