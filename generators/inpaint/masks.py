"""Where the painter paints: a fresh mask for every sample, from one of several sources.

A `MaskSource` has `draw(n, defect_type, rng) -> float (n, 1, R, R) in {0, 1}` on its device, every random number
from the torch.Generator given. Three sources plug in the same way:

- `BaseMasks`: the partition's base-set masks of that type, each copy moved, flipped, turned (optional), scaled
  and bent by a smooth, low-amplitude displacement field, then re-binarised so a 1-pixel crack stays a thin
  crack and a blob stays a blob (the shape family of the base set, never a new one).
- `DFMGANMasks`: the masks of a DFMGAN stage-2 generator (`--mask-source dfmgan`).
- `FolderMasks`: masks a user drew, a folder of PNGs (any size: resized to the painter's resolution).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from generators.classic.geometry import mask_bbox, randint, shift, uniform
from generators.dfmgan.sampler import DFMGANGenerator
from generators.mask_folder import mask_paths, read_mask_folder  # noqa: F401 - part of this module's API
from generators.spec import Option
from inspect_train.errors import InputError

MASK_SOURCES = ("base", "dfmgan")  # or a folder of PNG masks

# One flag for every painter that takes it (--aug inpaint, diffusion): the same declaration, so the commands add it
# once and it means the same for each.
MASK_SOURCE_OPTION = Option(
    "mask_source", "--mask-source", metavar="SOURCE",
    help="--aug inpaint, diffusion: where each painted defect goes: base (fresh deformed masks of the partition's "
         "base images; the default), dfmgan (masks drawn by DFMGAN stage-2 generators, trained when missing) or a "
         "folder of mask PNGs you drew")



class MaskSource(Protocol):
    resolution: int
    device: torch.device

    def draw(self, n: int, defect_type: str, rng: torch.Generator) -> torch.Tensor:
        """n fresh binary masks (n, 1, R, R) float for `defect_type`, on `self.device`."""
        ...


@dataclass
class DeformOptions:
    """How far a drawn mask may stray from its source: far enough to be new, close enough to stay a defect
    of the same kind."""

    flips: bool = True
    turns: bool = False  # quarter turns change a defect's direction (e.g. along a weave): on only where none matters
    scale: tuple[float, float] = (0.8, 1.25)
    elastic: float = 0.02  # displacement amplitude, as a fraction of the image side
    elastic_grid: int = 4  # control points per side of the smooth displacement field
    keep_edges: bool = True  # a mask touching the image border stays on that border (a broken edge stays one)
    place: bool = True  # random position (inside the image)

    @classmethod
    def from_config(cls, config: dict | None) -> "DeformOptions":
        config = dict(config or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise InputError(f"inpaint masks: unknown option(s) {unknown} (known: {sorted(known)})")
        if "scale" in config:
            low, high = (float(v) for v in config["scale"])
            if not 0 < low <= high:
                raise InputError(f"inpaint masks: scale {config['scale']} must be two numbers 0 < low <= high")
            config["scale"] = (low, high)
        if float(config.get("elastic", 0.0)) < 0 or int(config.get("elastic_grid", 4)) < 2:
            raise InputError("inpaint masks: elastic must be >= 0 and elastic_grid >= 2")
        return cls(**config)


# ----------------------------------------------------------------------------- pieces


def fit_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Binary masks (N, 1, h, w), square or not (a rectangular DFMGAN's), -> float (N, 1, size, size) by nearest
    neighbour; a mask that shrinking either side would erase (a thin line) keeps every output pixel it touches."""
    masks = masks.float()
    if tuple(masks.shape[-2:]) == (size, size):
        return (masks > 0.5).float()
    nearest = (F.interpolate(masks, size=(size, size), mode="nearest") > 0.5).float()
    empty = nearest.flatten(1).sum(1) == 0
    if empty.any() and max(masks.shape[-2:]) > size:  # adaptive max pooling also stretches the other side
        touched = (F.adaptive_max_pool2d(masks, (size, size)) > 0.5).float()
        nearest = torch.where(empty.view(-1, 1, 1, 1), touched, nearest)
    return nearest


def flip_turn(x: torch.Tensor, rng: torch.Generator, flips: bool = True, turns: bool = True) -> torch.Tensor:
    """Random horizontal/vertical flips and (square images, `turns`) a transpose per sample: with both, any of the
    8 symmetries of the square. The draws are made whatever the options, so switching one keeps the others."""
    n = x.shape[0]
    draw = torch.rand(3, n, generator=rng, device=rng.device).to(x.device) < 0.5
    shape = (n,) + (1,) * (x.dim() - 1)
    if flips:
        x = torch.where(draw[0].view(shape), x.flip(-1), x)
        x = torch.where(draw[1].view(shape), x.flip(-2), x)
    if turns and x.shape[-1] == x.shape[-2]:
        x = torch.where(draw[2].view(shape), x.transpose(-1, -2), x)
    return x


def _smooth_field(n: int, size: int, grid: int, amplitude_px: float, rng: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """(n, size, size, 2) displacement in pixels: Gaussian control points on a grid x grid lattice, upsampled
    bicubically, so neighbouring pixels move together (a line bends, it does not fray)."""
    points = torch.randn(n, 2, grid, grid, generator=rng, device=rng.device).to(device) * amplitude_px
    field = F.interpolate(points, size=(size, size), mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1)


def deform(masks: torch.Tensor, rng: torch.Generator, options: DeformOptions) -> torch.Tensor:
    """Fresh copies of binary masks (N, 1, S, S) float: flips/turns, scale about the mask's centre (or its border,
    for a mask on the border), a smooth displacement, re-binarisation and a random placement.

    Re-binarising keeps the family: pixels the resampled mask covers at least half are kept; where a thin shape
    is spread thinner than that (a 1-pixel line between pixel centres), the strongest pixels are kept up to the
    source's area times the scale squared, so a line stays one or two pixels wide instead of vanishing or
    thickening. A copy that would come out empty falls back to the flipped source."""
    n, _, h, w = masks.shape
    dev = masks.device
    masks = flip_turn((masks > 0.5).float(), rng, options.flips, options.turns)
    y0, y1, x0, x1 = mask_bbox(masks)
    area = masks.flatten(1).sum(1)
    cy, cx = (y0 + y1).float() / 2, (x0 + x1).float() / 2
    if options.keep_edges:  # scale about the border a mask touches, so it stays there
        cy = torch.where((y0 == 0) & (y1 < h - 1), torch.zeros_like(cy), cy)
        cy = torch.where((y1 == h - 1) & (y0 > 0), torch.full_like(cy, h - 1), cy)
        cx = torch.where((x0 == 0) & (x1 < w - 1), torch.zeros_like(cx), cx)
        cx = torch.where((x1 == w - 1) & (x0 > 0), torch.full_like(cx, w - 1), cx)
    low, high = options.scale
    s = uniform(n, rng, low, high).to(dev)
    field = _smooth_field(n, max(h, w), options.elastic_grid, options.elastic * max(h, w), rng, dev)[:, :h, :w]
    ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w)
    src_y = cy.view(-1, 1, 1) + (ys - cy.view(-1, 1, 1)) / s.view(-1, 1, 1) + field[..., 1]
    src_x = cx.view(-1, 1, 1) + (xs - cx.view(-1, 1, 1)) / s.view(-1, 1, 1) + field[..., 0]
    grid = torch.stack([(2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1], dim=-1)
    # Beyond the border a mask continues as it is at the border: a crack from the edge stays on the edge.
    soft = F.grid_sample(masks, grid, mode="bilinear", padding_mode="border", align_corners=False)
    flat = soft.flatten(1)
    k = (area * s * s).round().long().clamp(1, h * w)
    kth = flat.sort(dim=1, descending=True).values.gather(1, (k - 1).view(-1, 1))
    out = ((flat >= kth.clamp(max=0.5)) & (flat > 1e-3)).float().view_as(masks)
    empty = out.flatten(1).sum(1) == 0
    out = torch.where(empty.view(-1, 1, 1, 1), masks, out)
    if options.place:
        out = place(out, rng, options.keep_edges)
    return out


def place(masks: torch.Tensor, rng: torch.Generator, keep_edges: bool = True) -> torch.Tensor:
    """A random integer move that keeps each mask whole inside the image; with `keep_edges`, a mask touching
    a border only slides along it."""
    n, _, h, w = masks.shape
    y0, y1, x0, x1 = (t.to(rng.device) for t in mask_bbox(masks))
    dy = randint(n, h - 1 - y1, rng, low=-y0)
    dx = randint(n, w - 1 - x1, rng, low=-x0)
    if keep_edges:
        dy = torch.where((y0 == 0) | (y1 == h - 1), torch.zeros_like(dy), dy)
        dx = torch.where((x0 == 0) | (x1 == w - 1), torch.zeros_like(dx), dx)
    return shift(masks, dy, dx)


# ----------------------------------------------------------------------------- sources


class BaseMasks:
    """Deformed copies of the partition's base-set masks of each defect type (the default source)."""

    def __init__(self, masks: dict[str, torch.Tensor], resolution: int, device="cpu",
                 options: DeformOptions | None = None, names: dict[str, list[str]] | None = None):
        self.device, self.resolution = torch.device(device), int(resolution)
        self.options = options or DeformOptions()
        self.masks = {}
        for defect_type, stack in masks.items():
            if stack is None or stack.shape[0] == 0:
                raise InputError(f"inpaint masks: no base-set mask for '{defect_type}'")
            fitted = fit_masks(stack.to(self.device), self.resolution)
            if (fitted.flatten(1).sum(1) == 0).any():
                raise InputError(f"inpaint masks: an empty base-set mask for '{defect_type}'")
            self.masks[defect_type] = fitted
        self.names = {t: list(v) for t, v in (names or {}).items()}  # which base images the masks came from
        self.defect_types = sorted(self.masks)

    def draw(self, n: int, defect_type: str, rng: torch.Generator) -> torch.Tensor:
        if defect_type not in self.masks:
            raise InputError(f"inpaint masks: no base masks for '{defect_type}' (have {self.defect_types})")
        stack = self.masks[defect_type]
        idx = torch.randint(stack.shape[0], (n,), generator=rng, device=rng.device).to(self.device)
        return deform(stack[idx], rng, self.options)


class DFMGANMasks:
    """Masks from DFMGAN stage-2 generators (one checkpoint per defect type), resized to the painter's resolution.
    DFMGAN masks can come out empty; those are replaced by draws of `fallback` when one is given."""

    def __init__(self, checkpoints: dict[str, Path], resolution: int, device="cpu", truncation: float = 1.0,
                 fallback: MaskSource | None = None):
        self.device, self.resolution = torch.device(device), int(resolution)
        self.generator = DFMGANGenerator(dict(checkpoints), device=self.device, truncation=truncation,
                                         paired_good=False)
        self.fallback = fallback
        self.defect_types = list(self.generator.defect_types)

    def draw(self, n: int, defect_type: str, rng: torch.Generator) -> torch.Tensor:
        masks = fit_masks(self.generator.sample(n, defect_type, rng).masks, self.resolution)
        empty = masks.flatten(1).sum(1) == 0
        if self.fallback is not None and bool(empty.any()):
            masks = torch.where(empty.view(-1, 1, 1, 1), self.fallback.draw(n, defect_type, rng), masks)
        return masks


class FolderMasks:
    """User-drawn masks (a folder of PNGs), the same for every defect type; drawn at random, deformed when
    `options` is given, or taken in order (`generate --masks`)."""

    def __init__(self, folder: str | Path, resolution: int, device="cpu", options: DeformOptions | None = None):
        self.device, self.resolution = torch.device(device), int(resolution)
        self.names, masks = read_mask_folder(folder, self.resolution)
        self.masks = masks.to(self.device)
        self.options = options

    def draw(self, n: int, defect_type: str, rng: torch.Generator) -> torch.Tensor:
        idx = torch.randint(self.masks.shape[0], (n,), generator=rng, device=rng.device).to(self.device)
        picked = self.masks[idx]
        return deform(picked, rng, self.options) if self.options is not None else picked


def check_mask_source(source) -> None:
    """A --mask-source value: base, dfmgan or a folder holding mask PNGs (one clear error otherwise)."""
    if source not in (None, *MASK_SOURCES):
        if not Path(str(source)).is_dir():
            raise InputError(f"--mask-source {source}: not base, dfmgan or a folder of mask PNGs")
        mask_paths(source)  # no PNG there is one clear error


def choose_mask_source(mask_source, base_sets: dict | None, resolution: int, device, options: DeformOptions,
                       mask_checkpoints: dict[str, Path] | None = None, who: str = "inpaint"):
    """(the MaskSource `mask_source` names, the BaseMasks of `base_sets` or None). "base": deformed masks of
    `base_sets` ({type: ImageSet of the partition's base images}); "dfmgan": DFMGAN stage-2 generators
    `mask_checkpoints` ({type: checkpoint}), empty masks replaced by base ones when `base_sets` is given; else a
    folder of PNG masks drawn by the user (the same for every type; deformed like base masks)."""
    base = None
    if base_sets:
        base = BaseMasks({t: s.masks for t, s in base_sets.items()}, resolution, device, options,
                         names={t: list(s.names) for t, s in base_sets.items()})
    if mask_source in (None, "base"):
        if base is None:
            raise InputError(f"{who}: mask source 'base' needs the partition's base set")
        return base, base
    if mask_source == "dfmgan":
        if not mask_checkpoints:
            raise InputError(f"{who}: mask source 'dfmgan' needs one DFMGAN stage-2 checkpoint per defect type")
        return DFMGANMasks({t: Path(p) for t, p in mask_checkpoints.items()}, resolution, device, fallback=base), base
    folder = Path(str(mask_source))
    if not folder.is_dir():
        raise InputError(f"{who}: mask source '{mask_source}' is not base, dfmgan or a folder of PNG masks")
    return FolderMasks(folder, resolution, device, options), base


def describe_masks(masks: torch.Tensor) -> dict:
    """Area and minor-axis extent (pixels, 2 x the smaller principal standard deviation) of each mask: how a
    deformed copy is compared with its source."""
    n, _, h, w = masks.shape
    m = masks.float().flatten(1)
    area = m.sum(1).clamp(min=1)
    ys = torch.arange(h, device=masks.device, dtype=torch.float32).repeat_interleave(w)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32).repeat(h)
    my, mx = (m * ys).sum(1) / area, (m * xs).sum(1) / area
    dy, dx = ys[None] - my[:, None], xs[None] - mx[:, None]
    cyy, cxx, cxy = (m * dy * dy).sum(1) / area, (m * dx * dx).sum(1) / area, (m * dx * dy).sum(1) / area
    half_trace = (cyy + cxx) / 2
    root = torch.sqrt(((cyy - cxx) / 2) ** 2 + cxy ** 2)
    minor = 2 * torch.sqrt((half_trace - root).clamp(min=0))
    major = 2 * torch.sqrt(half_trace + root)
    return {"area": m.sum(1), "minor": minor, "major": major}


__all__ = ["MASK_SOURCES", "MASK_SOURCE_OPTION", "check_mask_source", "choose_mask_source", "MaskSource",
           "DeformOptions", "BaseMasks", "DFMGANMasks", "FolderMasks", "deform", "fit_masks",
           "flip_turn", "place", "read_mask_folder", "describe_masks"]


def painting_surfaces(good_images, good_names, channels: int, resolution: int, device, noun: str):
    """(the real good images a painter paints on, [0, 1] at its resolution on `device`; their names), from an
    ImageSet or a uint8 tensor; no image, or another channel count than the painters', is one clear error."""
    images = getattr(good_images, "images", good_images)
    names = list(good_names if good_names is not None else getattr(good_images, "names", []))
    if images is None or images.shape[0] == 0:
        raise InputError(f"{noun}: no train/good images to paint on")
    if int(images.shape[1]) != channels:
        raise InputError(f"{noun}: the painters were trained on {channels} channel(s), the good images "
                         f"have {images.shape[1]}")
    goods = images.to(device).float().div_(255.0)
    if tuple(goods.shape[-2:]) != (resolution, resolution):
        goods = F.interpolate(goods, size=(resolution, resolution), mode="bilinear",
                              align_corners=False, antialias=True).clamp_(0, 1)
    return goods, names
