"""Shape statistics of defect masks, and one distance between two sets of masks.

No network and no weights: these numbers say whether a generator's defects have the size, count,
shape, direction and place of the real ones (a DFMGAN mask that is a blob on the image border where the
real defect is a thin line in the middle shows up in every column).

Per mask (bool H x W):
- `area`: fraction of the image's pixels that are defect;
- `components`: number of 8-connected components (scipy.ndimage.label);
- `border`: 1 if any defect pixel lies in the first or last row or column;
- `elongation`, `orientation`: of the largest component, from the second moments of its pixels, each pixel
  taken as a unit square (so its own variance 1/12 is added on the diagonal and a one-pixel line stays
  finite: a horizontal line of length L has elongation L). Elongation is sqrt(major / minor eigenvalue),
  1 for a disc. Orientation is the major axis in degrees in (-90, 90], 0 = horizontal, 90 = vertical,
  positive = rising to the right as the image is shown. (Hand-written: scipy has no moments orientation.)
- `centroid_x`, `centroid_y`: centre of mass of the whole mask as a fraction of the width and height.
An empty mask has area 0, 0 components, border 0 and no shape, orientation or centroid (NaN).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

FEATURES = ("area", "components", "border", "elongation", "orientation", "centroid_x", "centroid_y")
# What the distance compares: skewed quantities on a log scale, the orientation as the angle from
# horizontal (|theta|, 0..90) so that -89 and 89 degrees count as the same direction.
DISTANCE_FEATURES = ("area", "components", "border", "log_elongation", "abs_orientation", "centroid_x", "centroid_y")
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def as_bool_masks(masks) -> np.ndarray:
    """Torch or numpy masks, (N, 1, H, W) or (N, H, W), -> bool numpy (N, H, W)."""
    if hasattr(masks, "detach"):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"expected masks (N, 1, H, W) or (N, H, W), got shape {masks.shape}")
    return masks > 0.5 if masks.dtype != bool else masks


def shape_of(region: np.ndarray) -> tuple[float, float]:
    """(elongation, orientation in degrees) of the pixels of a non-empty bool region."""
    ys, xs = np.nonzero(region)
    x = xs - xs.mean()
    y = -(ys - ys.mean())  # rows grow downwards; make y grow upwards so the angle reads as on screen
    cxx, cyy, cxy = (x * x).mean() + 1 / 12, (y * y).mean() + 1 / 12, (x * y).mean()
    low, high = np.linalg.eigvalsh(np.array([[cxx, cxy], [cxy, cyy]]))
    angle = 0.5 * math.degrees(math.atan2(2 * cxy, cxx - cyy))
    if angle <= -90:
        angle += 180
    return math.sqrt(high / max(low, 1e-12)), angle


def mask_features(masks) -> dict[str, np.ndarray]:
    """One value per mask for each name in FEATURES (NaN where an empty mask has none)."""
    masks = as_bool_masks(masks)
    n, h, w = masks.shape
    out = {name: np.full(n, np.nan) for name in FEATURES}
    for i, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
        out["area"][i] = mask.mean()
        out["components"][i] = count
        out["border"][i] = float(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        out["elongation"][i], out["orientation"][i] = shape_of(labels == int(np.argmax(sizes)) + 1)
        cy, cx = ndimage.center_of_mass(mask)
        out["centroid_x"][i], out["centroid_y"][i] = (cx + 0.5) / w, (cy + 0.5) / h
    return out


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _or_none(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def summarize(features: dict[str, np.ndarray]) -> dict:
    """The table's numbers for one set of masks."""
    area, components = features["area"], features["components"]
    n = int(area.shape[0])
    if n == 0:
        return {"n": 0}
    angles = np.radians(_finite(features["orientation"]))
    elongation = _finite(features["elongation"])
    cx, cy = _finite(features["centroid_x"]), _finite(features["centroid_y"])
    # Orientation is an axis (0 and 180 degrees are the same line): average the doubled angle.
    c, s = (np.cos(2 * angles).mean(), np.sin(2 * angles).mean()) if angles.size else (np.nan, np.nan)
    return {
        "n": n,
        "empty_fraction": float((components == 0).mean()),
        "area_median": float(np.median(area)),
        "area_q10": float(np.quantile(area, 0.1)),
        "area_q90": float(np.quantile(area, 0.9)),
        "components_mean": float(components.mean()),
        "border_fraction": float(features["border"].mean()),
        "elongation_median": _or_none(np.median(elongation)) if elongation.size else None,
        "orientation_mean_deg": _or_none(0.5 * math.degrees(math.atan2(s, c))) if angles.size else None,
        "orientation_abs_median_deg": _or_none(np.degrees(np.median(np.abs(angles)))) if angles.size else None,
        "orientation_coherence": _or_none(math.hypot(c, s)) if angles.size else None,
        "centroid_spread": _or_none(math.sqrt(cx.var() + cy.var())) if cx.size else None,
    }


def distance_column(features: dict[str, np.ndarray], name: str) -> np.ndarray:
    """One of DISTANCE_FEATURES for every mask (NaN where the mask is empty and the feature has no value)."""
    if name == "log_elongation":
        return np.log(np.asarray(features["elongation"], dtype=np.float64))  # elongation >= 1, NaN stays NaN
    if name == "abs_orientation":
        return np.abs(np.asarray(features["orientation"], dtype=np.float64))
    return np.asarray(features[name], dtype=np.float64)


def distance_values(features: dict[str, np.ndarray], name: str) -> np.ndarray:
    return _finite(distance_column(features, name))


def mask_distance(real: dict[str, np.ndarray], generated: dict[str, np.ndarray]) -> dict:
    """Mean over DISTANCE_FEATURES of the 1-D Wasserstein distance (scipy) between the real and generated
    values of a feature, divided by the standard deviation of the two sets pooled with equal weight
    (var = (var_r + var_g) / 2 + ((mean_r - mean_g) / 2)^2), so that neither the few real masks nor the
    many generated ones set the scale alone and no feature dominates: 0 = the same distributions, about 2 =
    no overlap at all (two point masses: the distance is twice the pooled std). A feature constant and equal
    on both sides counts 0; one that a side lacks entirely (every generated mask empty: no shape) is left
    out and named in `skipped`."""
    per, skipped = {}, []
    for name in DISTANCE_FEATURES:
        r, g = distance_values(real, name), distance_values(generated, name)
        if r.size == 0 or g.size == 0:
            skipped.append(name)
            continue
        pooled = math.sqrt((r.var() + g.var()) / 2 + ((r.mean() - g.mean()) / 2) ** 2)
        per[name] = float(wasserstein_distance(r, g) / pooled) if pooled > 1e-12 else 0.0
    value = float(np.mean(list(per.values()))) if per else None
    return {"value": value, "per_feature": per, "skipped": skipped}


def mask_iou_diversity(masks) -> float | None:
    """Mean over pairs of 1 - IoU of the masks (1 = no two masks overlap, 0 = all the same mask);
    pairs of two empty masks count 0. None with fewer than 2 masks."""
    flat = as_bool_masks(masks).reshape(len(masks), -1).astype(np.float32)
    n = flat.shape[0]
    if n < 2:
        return None
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    upper = np.triu_indices(n, 1)
    return float((1.0 - iou[upper]).mean())
