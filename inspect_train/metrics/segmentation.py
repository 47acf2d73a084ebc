"""Pixel- and image-level scores of anomaly maps against ground-truth masks.

One function per metric so each can be tested on hand-computed cases, and one
`segmentation_metrics` that computes the set every segment run reports. The
curves come from scikit-learn; only the AUPRO weighting and the partial-area
integral are ours. Every metric uses every test pixel: nothing is subsampled.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

METRIC_KEYS = ("pixel_ap", "pixel_auroc", "aupro", "image_auroc", "image_ap", "pixel_f1_max")
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _as_maps(maps) -> np.ndarray:
    """Anomaly maps as float32 (N, H, W); accepts (N, H, W) or (N, 1, H, W), tensor or array."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().float().numpy()
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 4:
        if maps.shape[1] != 1:
            raise ValueError(f"anomaly maps must have one channel, got shape {maps.shape}")
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ValueError(f"anomaly maps must be (N, H, W) or (N, 1, H, W), got shape {maps.shape}")
    return maps


def _as_masks(masks) -> np.ndarray:
    """Ground truth as bool (N, H, W)."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim == 4:
        masks = masks[:, 0]
    return masks > 0.5 if masks.dtype != bool else masks


def _both_classes(labels: np.ndarray) -> bool:
    return bool(labels.any()) and not bool(labels.all())


def pixel_ap(maps, masks) -> float:
    """Average precision (area under the PR curve) over all pixels of all images."""
    y, s = _as_masks(masks).ravel(), _as_maps(maps).ravel()
    return float(average_precision_score(y, s)) if _both_classes(y) else math.nan


def pixel_auroc(maps, masks) -> float:
    """ROC AUC over all pixels of all images."""
    y, s = _as_masks(masks).ravel(), _as_maps(maps).ravel()
    return float(roc_auc_score(y, s)) if _both_classes(y) else math.nan


def pixel_f1_max(maps, masks) -> float:
    """The best pixel F1 over all thresholds (the one-number summary of the PR curve at its best point)."""
    y, s = _as_masks(masks).ravel(), _as_maps(maps).ravel()
    if not y.any():
        return math.nan
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def region_weights(masks) -> np.ndarray:
    """Per-pixel weight 1/|region| for defect pixels (8-connected regions, per image), 1 for good pixels.

    With these weights, the weighted true-positive rate of a threshold is the
    mean over regions of the fraction of each region above it: the per-region
    overlap (PRO). So the PRO curve is a weighted ROC curve.
    """
    masks = _as_masks(masks)
    weights = np.ones(masks.shape, dtype=np.float64)
    for i in range(masks.shape[0]):
        labels, count = ndimage.label(masks[i], structure=EIGHT_CONNECTED)
        if count:
            sizes = np.bincount(labels.ravel())
            region = labels > 0
            weights[i][region] = 1.0 / sizes[labels[region]]
    return weights


def aupro(maps, masks, max_fpr: float = 0.3) -> float:
    """Area under the per-region-overlap curve for pixel FPR in [0, max_fpr], divided by max_fpr (1 = perfect).

    FPR counts all defect-free pixels of all images. The curve is cut at
    max_fpr by linear interpolation between the two thresholds around it.
    """
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    y = _as_masks(masks)
    s = _as_maps(maps)
    if not _both_classes(y):
        return math.nan
    fpr, pro, _ = roc_curve(y.ravel(), s.ravel(), sample_weight=region_weights(y).ravel())
    keep = fpr <= max_fpr
    fpr_cut, pro_cut = fpr[keep], pro[keep]
    if fpr_cut[-1] < max_fpr:
        nxt = int(np.searchsorted(fpr, max_fpr, side="right"))
        x0, x1, y0, y1 = fpr[nxt - 1], fpr[nxt], pro[nxt - 1], pro[nxt]
        pro_at = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        fpr_cut, pro_cut = np.append(fpr_cut, max_fpr), np.append(pro_cut, pro_at)
    return float(auc(fpr_cut, pro_cut) / max_fpr)


def smooth_maps(maps, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each map separately (no blur across images); sigma 0 returns the maps as they are."""
    maps = _as_maps(maps)
    if sigma <= 0:
        return maps
    return ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="nearest")


def image_scores(maps, sigma: float = 4.0) -> np.ndarray:
    """Image anomaly score: the maximum of the smoothed map (smoothing keeps one hot pixel from deciding)."""
    smoothed = smooth_maps(maps, sigma)
    return smoothed.reshape(smoothed.shape[0], -1).max(axis=1)


def image_labels(masks) -> np.ndarray:
    """An image is defective when its mask has any defect pixel."""
    masks = _as_masks(masks)
    return masks.reshape(masks.shape[0], -1).any(axis=1)


def image_auroc(maps, masks, sigma: float = 4.0) -> float:
    labels = image_labels(masks)
    return float(roc_auc_score(labels, image_scores(maps, sigma))) if _both_classes(labels) else math.nan


def image_ap(maps, masks, sigma: float = 4.0) -> float:
    labels = image_labels(masks)
    return float(average_precision_score(labels, image_scores(maps, sigma))) if _both_classes(labels) else math.nan


def segmentation_metrics(maps, masks, sigma: float = 4.0, max_fpr: float = 0.3) -> dict[str, float]:
    """Every metric of a segment run; NaN where undefined (e.g. image AUROC without any good test image)."""
    maps, masks = _as_maps(maps), _as_masks(masks)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    return {
        "pixel_ap": pixel_ap(maps, masks),
        "pixel_auroc": pixel_auroc(maps, masks),
        "aupro": aupro(maps, masks, max_fpr=max_fpr),
        "image_auroc": image_auroc(maps, masks, sigma),
        "image_ap": image_ap(maps, masks, sigma),
        "pixel_f1_max": pixel_f1_max(maps, masks),
    }
