"""Is an arm better than the real-only baseline on the same test images?

Both models are scored on the same images, so the comparison is paired: an
exact McNemar test on per-image correctness for classification accuracy, and
a paired bootstrap (the same resampled images for both arms) for ranking
metrics, reported as a percentile interval of arm - baseline.

Written by hand here: the percentile bootstrap loop, and the binned
pixel-level curves of `segmentation_intervals`. Recomputing exact
scikit-learn curves over every pixel for each resample is too slow, so each
image's pixel scores are counted once into bins whose edges are quantiles of
that arm's own scores (equal pixel counts per bin; the ranking metrics depend
on order only, so per-arm edges are fair); a resample's curves are sums of its
images' histograms, from which the binned pixel AP, AUROC, F1 max and AUPRO
follow. Scores in one bin count as tied, handled as scikit-learn handles ties,
so binned values are the exact values of the maps quantised to the bins. When
the exact values are given, each interval is moved by the binning's error on
all images (exact difference - binned difference), so it sits around the exact
difference. The McNemar p-value is scipy's binomial test; image-level metrics
and areas under curves use scikit-learn.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy.stats import binomtest
from sklearn.metrics import auc, average_precision_score, roc_auc_score

from inspect_train.metrics.classification import _as_labels, _as_probabilities, macro_auprc
from inspect_train.metrics.segmentation import (
    METRIC_KEYS,
    _as_maps,
    _as_masks,
    image_labels,
    image_scores,
    region_weights,
)

N_BINS = 1024


def _as_bool(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).astype(bool).ravel()


def _undefined(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def mcnemar_exact(correct_baseline, correct_arm) -> dict:
    """Exact two-sided McNemar test on per-image correctness.

    Only images where exactly one model is right say anything about which is
    better; under "no difference" each of them is a fair coin, so the p-value
    is the binomial test of the arm's wins among them at p = 0.5.
    """
    baseline, arm = _as_bool(correct_baseline), _as_bool(correct_arm)
    if baseline.shape != arm.shape:
        raise ValueError(f"{baseline.size} baseline results for {arm.size} arm results")
    arm_only = int(np.count_nonzero(arm & ~baseline))
    baseline_only = int(np.count_nonzero(baseline & ~arm))
    discordant = arm_only + baseline_only
    p_value = float(binomtest(arm_only, discordant, 0.5).pvalue) if discordant else 1.0
    return {"test": "mcnemar_exact", "arm_only": arm_only, "baseline_only": baseline_only, "p_value": p_value}


def _resamples(n_items: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_items) item indices drawn with replacement; one row per resample, shared by both arms."""
    return np.random.default_rng(seed).integers(0, n_items, size=(n_resamples, n_items))


def _bootstrap_many(statistic: Callable, n_items: int, n_resamples: int, seed: int, confidence: float) -> dict[str, dict]:
    """Paired bootstrap of several metrics at once: `statistic(indices)` -> {key: (baseline, arm)}.

    One pass over the resamples serves every key, so metrics that share work
    (the pixel curves) are computed once per resample. A resample where a
    value is undefined (None or NaN) is skipped for that key only.
    """
    if n_items < 1:
        raise ValueError("the paired bootstrap needs at least one item")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    full = statistic(np.arange(n_items))
    differences: dict[str, list[float]] = {key: [] for key in full}
    for indices in _resamples(n_items, n_resamples, seed):
        for key, (baseline, arm) in statistic(indices).items():
            if not (_undefined(baseline) or _undefined(arm)):
                differences[key].append(float(arm) - float(baseline))
    tail = 100.0 * (1.0 - confidence) / 2.0
    result = {}
    for key, (baseline, arm) in full.items():
        values = differences[key]
        low, high = np.percentile(values, [tail, 100.0 - tail]) if values else (None, None)
        result[key] = {
            "test": "paired_bootstrap",
            "difference": None if _undefined(baseline) or _undefined(arm) else float(arm) - float(baseline),
            "low": None if low is None else float(low),
            "high": None if high is None else float(high),
            "n_resamples": len(values),
        }
    return result


def paired_bootstrap(statistic: Callable, n_items: int, n_resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Percentile interval of arm - baseline, resampling items with the same indices for both arms.

    `statistic(indices) -> (value_baseline, value_arm)` on the chosen items.
    Using the same indices for both is what makes it paired: image-to-image
    difficulty cancels out of the difference instead of widening the interval.
    """
    return _bootstrap_many(lambda indices: {"value": statistic(indices)}, n_items, n_resamples, seed, confidence)["value"]


def classification_ap_interval(prob_baseline, prob_arm, labels, n_resamples: int = 1000, seed: int = 0,
                               confidence: float = 0.95) -> dict:
    """Paired bootstrap of the macro AU-PR (`classification.macro_auprc`) of an arm against the baseline."""
    baseline, arm = _as_probabilities(prob_baseline), _as_probabilities(prob_arm)
    if baseline.shape != arm.shape:
        raise ValueError(f"baseline probabilities {baseline.shape} and arm probabilities {arm.shape} differ in shape")
    labels = _as_labels(labels, baseline.shape[0])

    def statistic(indices):
        return macro_auprc(baseline[indices], labels[indices]), macro_auprc(arm[indices], labels[indices])

    return paired_bootstrap(statistic, labels.size, n_resamples, seed, confidence)


def unknown_auroc_intervals(scores_baseline: dict, scores_arm: dict, is_unknown, n_resamples: int = 1000,
                            seed: int = 0, confidence: float = 0.95) -> dict[str, dict]:
    """Open set: paired bootstrap of each unknown score's known-vs-unknown AUROC (keys `<score>_auroc`), an arm
    against the baseline on the same test images; a resample without both known and unknown images is skipped."""
    unknown = _as_bool(is_unknown)
    names = [name for name in scores_baseline if name in scores_arm]
    base = {n: np.asarray(scores_baseline[n], dtype=np.float64).ravel() for n in names}
    arm = {n: np.asarray(scores_arm[n], dtype=np.float64).ravel() for n in names}

    def auroc(scores, indices):
        picked = unknown[indices]
        return float(roc_auc_score(picked, scores[indices])) if picked.any() and not picked.all() else None

    def statistic(indices):
        return {f"{n}_auroc": (auroc(base[n], indices), auroc(arm[n], indices)) for n in names}

    return _bootstrap_many(statistic, unknown.size, n_resamples, seed, confidence)


def _pixel_histograms(maps: np.ndarray, masks: np.ndarray, weights: np.ndarray, n_bins: int):
    """Per-image score histograms (each (N, n_bins)): defect pixels, defect pixels weighted by region, good pixels."""
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps contain NaN or infinite values")
    n = maps.shape[0]
    inner_edges = np.unique(np.quantile(maps, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    bins = np.searchsorted(inner_edges, maps, side="right").astype(np.int64)
    flat = (bins + (np.arange(n, dtype=np.int64) * n_bins)[:, None, None]).ravel()
    defect = masks.ravel()
    size = n * n_bins
    defect_counts = np.bincount(flat[defect], minlength=size).reshape(n, n_bins).astype(np.float64)
    region_sums = np.bincount(flat[defect], weights=weights.ravel()[defect], minlength=size).reshape(n, n_bins)
    good_counts = np.bincount(flat[~defect], minlength=size).reshape(n, n_bins).astype(np.float64)
    return defect_counts, region_sums, good_counts


def _binned_pixel_metrics(defect: np.ndarray, region: np.ndarray, good: np.ndarray, max_fpr: float) -> dict[str, float]:
    """Pixel AP, AUROC, F1 max and AUPRO from summed histograms, thresholding at each bin edge from the top down."""
    # Cumulative counts flagged at each threshold, starting with nothing flagged.
    tp = np.concatenate([[0.0], np.cumsum(defect[::-1])])
    fp = np.concatenate([[0.0], np.cumsum(good[::-1])])
    pro_sum = np.concatenate([[0.0], np.cumsum(region[::-1])])
    n_pos, n_neg, n_regions = tp[-1], fp[-1], pro_sum[-1]
    out = {"pixel_ap": math.nan, "pixel_auroc": math.nan, "aupro": math.nan, "pixel_f1_max": math.nan}
    if n_pos > 0:
        out["pixel_f1_max"] = float(np.max(2.0 * tp / (tp + fp + n_pos)))
    if n_pos == 0 or n_neg == 0:
        return out
    recall = tp / n_pos
    flagged = tp + fp
    precision = np.divide(tp, flagged, out=np.ones_like(tp), where=flagged > 0)
    # Step-wise AP as in scikit-learn: each recall increase times the precision where it happens.
    out["pixel_ap"] = float(np.sum(np.diff(recall) * precision[1:]))
    fpr = fp / n_neg
    out["pixel_auroc"] = float(auc(fpr, recall))
    # AUPRO: the region-weighted ROC cut at max_fpr by linear interpolation, as in segmentation.aupro.
    pro = pro_sum / n_regions
    keep = fpr <= max_fpr
    fpr_cut, pro_cut = fpr[keep], pro[keep]
    if fpr_cut[-1] < max_fpr:
        nxt = int(np.searchsorted(fpr, max_fpr, side="right"))
        x0, x1, y0, y1 = fpr[nxt - 1], fpr[nxt], pro[nxt - 1], pro[nxt]
        fpr_cut = np.append(fpr_cut, max_fpr)
        pro_cut = np.append(pro_cut, y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0))
    out["aupro"] = float(auc(fpr_cut, pro_cut) / max_fpr)
    return out


def _image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    if labels.any() and not labels.all():
        return {"image_auroc": float(roc_auc_score(labels, scores)), "image_ap": float(average_precision_score(labels, scores))}
    return {"image_auroc": math.nan, "image_ap": math.nan}


def segmentation_intervals(maps_baseline, maps_arm, masks, sigma: float, n_resamples: int = 200, seed: int = 0,
                           max_fpr: float = 0.3, exact: dict | None = None, n_bins: int = N_BINS,
                           confidence: float = 0.95) -> dict[str, dict]:
    """Paired bootstrap intervals over test images for every segmentation metric (METRIC_KEYS).

    Images, not pixels, are resampled: pixels of one image are not
    independent, and the same image set goes to both arms. Pixel-level
    intervals come from binned curves (see the module docstring); image AUROC
    and AP use the image scores (max of the map smoothed by `sigma`) directly.
    `exact` {metric: (baseline, arm)}, e.g. from `segmentation_metrics`,
    supplies the reported difference, and the interval moves with it by the
    binning's error; without it the all-images binned value is used for the
    pixel metrics.
    """
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    maps = {"baseline": _as_maps(maps_baseline), "arm": _as_maps(maps_arm)}
    masks = _as_masks(masks)
    for name, arm_maps in maps.items():
        if arm_maps.shape != masks.shape:
            raise ValueError(f"{name} maps {arm_maps.shape} and masks {masks.shape} differ in shape")
    n = masks.shape[0]
    weights = region_weights(masks)
    histograms = {name: _pixel_histograms(arm_maps, masks, weights, n_bins) for name, arm_maps in maps.items()}
    labels = image_labels(masks)
    scores = {name: image_scores(arm_maps, sigma) for name, arm_maps in maps.items()}
    del maps, weights

    def statistic(indices):
        counts = np.bincount(indices, minlength=n).astype(np.float64)
        values = {}
        for name in ("baseline", "arm"):
            values[name] = _binned_pixel_metrics(*(counts @ h for h in histograms[name]), max_fpr)
            values[name].update(_image_metrics(labels[indices], scores[name][indices]))
        return {key: (values["baseline"][key], values["arm"][key]) for key in METRIC_KEYS}

    intervals = _bootstrap_many(statistic, n, n_resamples, seed, confidence)
    for key, (baseline, arm) in (exact or {}).items():
        if key not in intervals:
            continue
        entry = intervals[key]
        exact_difference = None if _undefined(baseline) or _undefined(arm) else float(arm) - float(baseline)
        if exact_difference is not None and entry["difference"] is not None and entry["low"] is not None:
            shift = exact_difference - entry["difference"]
            entry["low"], entry["high"] = entry["low"] + shift, entry["high"] + shift
        entry["difference"] = exact_difference
    return intervals
