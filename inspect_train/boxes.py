"""Boxes from masks: one box per 8-connected component of a defect mask, labelled with the image's defect type.

One rule (`components_boxes`) for `generate --format coco|yolo`, which writes these boxes to disk, and for the
detect task, which applies it on the fly: to the real base images and to every fresh synthetic sample of a
training batch, and to the test images. Coordinates are pixel edges, (x0, y0, x1, y1) with x1 = x0 + width: a
one-pixel component at column 3 spans [3, 4). A defect-free mask gives no box.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def components_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) in pixels of each 8-connected component of a binary (H, W) mask (scipy.ndimage labels them)."""
    labels, _ = ndimage.label(mask.astype(bool), structure=np.ones((3, 3), dtype=int))
    return [(int(xs.start), int(ys.start), int(xs.stop - xs.start), int(ys.stop - ys.start))
            for ys, xs in (sl for sl in ndimage.find_objects(labels) if sl is not None)]


def mask_boxes(mask) -> torch.Tensor:
    """float (M, 4) boxes (x0, y0, x1, y1), one per 8-connected component of a (H, W) or (1, H, W) mask (> 0.5)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (H, W) or (1, H, W), got shape {mask.shape}")
    boxes = [(x, y, x + w, y + h) for x, y, w, h in components_boxes(mask > 0.5)]
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def box_targets(masks: torch.Tensor, labels: torch.Tensor, device=None) -> list[dict[str, torch.Tensor]]:
    """Per image {"boxes": (M, 4), "labels": (M,)}: every component of its mask carries the image's label.

    `masks` (B, 1, H, W), `labels` (B,) class indices. A good image (empty mask) gets no box whatever its label.
    """
    device = masks.device if device is None else device
    flat = (masks.detach() > 0.5).cpu().numpy()
    out = []
    for mask, label in zip(flat, labels.detach().cpu().tolist()):
        boxes = mask_boxes(mask)
        out.append({"boxes": boxes.to(device),
                    "labels": torch.full((len(boxes),), int(label), dtype=torch.long, device=device)})
    return out
