"""A picture per defect type: the real base defects, then each generator's samples, with mask outlines.

One look tells what the numbers summarise: blobs on the border where the real defects are thin lines,
masks that do not follow the defect drawn in the image, backgrounds that are smears. Each block is a grid
(up to 2 rows of 8), every image scaled to about 96 pixels on its long side, its mask's outline in red
just outside the mask (scipy.ndimage.binary_dilation minus the mask), so a thin defect stays visible. Drawn with matplotlib
(Agg), returned as an RGB array for TensorBoard and written as a PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

TILE = 96
GAP = 2
OUTLINE = (255, 40, 40)
MIN_WIDTH = 640  # pixels: the title and the block labels fit


def _tile(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """uint8 (C, H, W) + mask (1, H, W) -> uint8 RGB tile of `size` (h, w) with the mask outline drawn."""
    arr = image.detach().cpu().numpy().transpose(1, 2, 0)
    arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr
    h, w = size
    up = h >= arr.shape[0]
    pil = Image.fromarray(np.ascontiguousarray(arr)).resize((w, h), Image.NEAREST if up else Image.BILINEAR)
    tile = np.array(pil)
    m = Image.fromarray(mask.detach().cpu().numpy()[0].astype(np.uint8) * 255).resize((w, h), Image.NEAREST)
    m = np.array(m) > 127
    edge = ndimage.binary_dilation(m) & ~m
    tile[edge] = OUTLINE
    return tile


def grid(images: torch.Tensor, masks: torch.Tensor, per_row: int = 8, rows: int = 2) -> np.ndarray:
    """Up to per_row * rows (image, outline) tiles in a grid on a dark background."""
    h, w = images.shape[2:]
    scale = TILE / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size[1] * per_row < MIN_WIDTH // 2:  # tall, narrow parts: the same samples in one wider row
        per_row, rows = per_row * rows, 1
    n = min(len(images), per_row * rows)
    cols, nrows = min(n, per_row), max(1, -(-n // per_row))
    out = np.full((nrows * (size[0] + GAP) + GAP, max(cols, 1) * (size[1] + GAP) + GAP, 3), 40, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, per_row)
        y, x = GAP + r * (size[0] + GAP), GAP + c * (size[1] + GAP)
        out[y:y + size[0], x:x + size[1]] = _tile(images[i], masks[i], size)
    return out


def contact_sheet(blocks: list[tuple[str, torch.Tensor, torch.Tensor]], title: str, path: Path | None = None,
                  per_row: int = 8, rows: int = 2) -> np.ndarray:
    """blocks: (label, uint8 images (N, C, H, W), masks (N, 1, H, W)), real base set first. Returns RGB uint8."""
    import matplotlib  # heavy optional dependency: only the contact sheets need it

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    grids = [grid(images, masks, per_row, rows) for _, images, masks in blocks]
    dpi, title_px, label_px = 100, 30, 22
    width = max(MIN_WIDTH, *(g.shape[1] for g in grids))  # room for the title and labels
    heights = [g.shape[0] + label_px for g in grids]
    fig = plt.figure(figsize=(width / dpi, (sum(heights) + title_px) / dpi), dpi=dpi)
    fig.suptitle(title, x=0.01, y=1 - 4 / (sum(heights) + title_px), ha="left", va="top", fontsize=10)
    top = 1 - title_px / (sum(heights) + title_px)
    total = sum(heights) + title_px
    for (label, _, _), g, h in zip(blocks, grids, heights):
        ax_h = g.shape[0] / total
        top -= label_px / total
        ax = fig.add_axes((0, top - ax_h, g.shape[1] / width, ax_h))
        ax.imshow(g, interpolation="nearest", aspect="equal")
        ax.set_axis_off()
        fig.text(0.01, top + 3 / total, label, ha="left", va="bottom", fontsize=8)
        top -= ax_h
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    if path is not None:
        Image.fromarray(rgb).save(path)
    return rgb
