"""A small procedural dataset in MVTec AD layout, for tests and the quickstart.

Category `toy`: 64x64 RGB patches of a brushed, woven metal-like surface with
three defect types that look different from one another: `scratch` (a thin
bright line), `hole` (a dark pit with a bright rim) and `stain` (a brown,
irregular blot). Masks mark exactly the pixels each defect changed. Everything
comes from one numpy Generator, so the same seed writes the same bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64
COUNTS = {"train_good": 220, "test_good": 40, "scratch": 18, "hole": 18, "stain": 18}
DEFECT_TYPES = ("hole", "scratch", "stain")


def _smooth_1d(noise: np.ndarray, width: int, axis: int) -> np.ndarray:
    kernel = np.ones(width) / width
    return np.apply_along_axis(lambda v: np.convolve(np.concatenate([v[-width:], v, v[:width]]), kernel, "same")[width:-width], axis, noise)


def surface(rng: np.random.Generator) -> np.ndarray:
    """A float RGB texture in [0, 1]: brushed grain along x, a fine weave and slow shading."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    grain = _smooth_1d(rng.normal(0, 1, (SIZE, SIZE)), 9, axis=1)
    period = rng.uniform(5.0, 7.0)
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = np.sin(2 * np.pi * xx / period + phase[0]) * np.sin(2 * np.pi * yy / period + phase[1])
    angle = rng.uniform(0, 2 * np.pi)
    shading = (np.cos(angle) * xx + np.sin(angle) * yy) / SIZE
    luminance = 0.55 + 0.06 * grain + 0.05 * weave + 0.06 * shading
    tint = np.array([0.92, 0.97, 1.05]) * rng.uniform(0.95, 1.05, 3)
    return np.clip(luminance[..., None] * tint, 0, 1)


def add_scratch(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    length = rng.uniform(20, 45)
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(16, SIZE - 16, 2)
    dy, dx = np.sin(angle), np.cos(angle)
    along = (yy - cy) * dy + (xx - cx) * dx
    across = np.abs(-(yy - cy) * dx + (xx - cx) * dy)
    mask = (np.abs(along) <= length / 2) & (across <= rng.uniform(0.6, 1.2))
    img[mask] = np.clip(img[mask] + rng.uniform(0.25, 0.35), 0, 1)
    return mask


def add_hole(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    radius = rng.uniform(3.5, 7.5)
    cy, cx = rng.uniform(10, SIZE - 10, 2)
    dist = np.hypot(yy - cy, xx - cx)
    pit = dist <= radius
    rim = (dist > radius) & (dist <= radius + 1.5)
    img[pit] = img[pit] * 0.2 + 0.02
    img[rim] = np.clip(img[rim] + 0.2, 0, 1)
    return pit | rim


def add_stain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    cy, cx = rng.uniform(14, SIZE - 14, 2)
    field = np.zeros((SIZE, SIZE))
    for _ in range(rng.integers(3, 6)):
        oy, ox = rng.normal(0, 4, 2)
        sigma = rng.uniform(3, 6)
        field += np.exp(-((yy - cy - oy) ** 2 + (xx - cx - ox) ** 2) / (2 * sigma**2))
    mask = field > 0.5
    alpha = np.clip((field - 0.5) * 1.5 + 0.35, 0, 0.8)[..., None]
    brown = np.array([0.45, 0.3, 0.12])
    img[:] = np.where(mask[..., None], img * (1 - alpha) + brown * alpha, img)
    return mask


DEFECT_PAINTERS = {"hole": add_hole, "scratch": add_scratch, "stain": add_stain}


def _save_rgb(img: np.ndarray, path: Path) -> None:
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB").save(path)


def write_toy_dataset(out_dir: str | Path, seed: int = 0) -> Path:
    """Write `<out_dir>/toy` and return `out_dir`. An existing `toy` folder is replaced."""
    out_dir = Path(out_dir)
    category = out_dir / "toy"
    if category.exists():
        shutil.rmtree(category)
    rng = np.random.default_rng(seed)
    for split, count in (("train", COUNTS["train_good"]), ("test", COUNTS["test_good"])):
        folder = category / split / "good"
        folder.mkdir(parents=True)
        for i in range(count):
            _save_rgb(surface(rng), folder / f"{i:03d}.png")
    for defect in DEFECT_TYPES:
        img_dir = category / "test" / defect
        gt_dir = category / "ground_truth" / defect
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        for i in range(COUNTS[defect]):
            img = surface(rng)
            before = img.copy()
            mask = DEFECT_PAINTERS[defect](img, rng)
            changed = np.any(np.round(img * 255) != np.round(before * 255), axis=-1)
            _save_rgb(img, img_dir / f"{i:03d}.png")
            Image.fromarray((mask | changed).astype(np.uint8) * 255, "L").save(gt_dir / f"{i:03d}_mask.png")
    return out_dir
