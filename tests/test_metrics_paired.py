"""Paired significance tests: McNemar by hand, bootstrap properties, binned pixel curves against exact sklearn values."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from inspect_train.metrics.classification import macro_auprc
from inspect_train.metrics.paired import (
    _binned_pixel_metrics,
    _pixel_histograms,
    classification_ap_interval,
    mcnemar_exact,
    paired_bootstrap,
    segmentation_intervals,
    unknown_auroc_intervals,
)
from inspect_train.metrics.segmentation import METRIC_KEYS, region_weights, segmentation_metrics


def test_mcnemar_hand_cases():
    baseline = np.zeros(12, dtype=bool)
    arm = np.array([True] * 10 + [False] * 2)
    r = mcnemar_exact(baseline, arm)
    assert r == {"test": "mcnemar_exact", "arm_only": 10, "baseline_only": 0, "p_value": pytest.approx(2 * 0.5**10)}
    # 1 win against 4 losses: P(X <= 1) + P(X >= 4) for X ~ Bin(5, 1/2) = 2 * (1 + 5) / 32.
    baseline = torch.tensor([True, True, True, True, False, True, False])
    arm = torch.tensor([False, False, False, False, True, True, False])
    r = mcnemar_exact(baseline, arm)
    assert (r["arm_only"], r["baseline_only"]) == (1, 4)
    assert r["p_value"] == pytest.approx(12 / 32)
    # Agreeing on every image (right or wrong) says nothing.
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def _mean_statistic(baseline, arm):
    return lambda idx: (float(baseline[idx].mean()), float(arm[idx].mean()))


def test_bootstrap_identical_arms_and_determinism():
    values = np.random.default_rng(1).random(30)
    r = paired_bootstrap(_mean_statistic(values, values.copy()), 30, n_resamples=200)
    assert (r["difference"], r["low"], r["high"], r["n_resamples"]) == (0.0, 0.0, 0.0, 200)
    arm = values + np.random.default_rng(2).normal(0, 0.1, 30)
    first = paired_bootstrap(_mean_statistic(values, arm), 30, n_resamples=200, seed=5)
    assert first == paired_bootstrap(_mean_statistic(values, arm), 30, n_resamples=200, seed=5)
    assert first != paired_bootstrap(_mean_statistic(values, arm), 30, n_resamples=200, seed=6)
    assert first["low"] <= first["difference"] <= first["high"]


def test_bootstrap_better_arm_interval_above_zero():
    # Per-image scores vary a lot, but the arm beats the baseline on every image: pairing removes the spread.
    baseline = np.random.default_rng(3).random(40) * 10
    arm = baseline + 0.5
    r = paired_bootstrap(_mean_statistic(baseline, arm), 40, n_resamples=300)
    assert r["difference"] == pytest.approx(0.5) and r["low"] > 0.4


def test_bootstrap_skips_undefined_resamples():
    def statistic(idx):
        return (None if 0 not in idx else 1.0), (math.nan if 1 not in idx else 2.0)

    r = paired_bootstrap(statistic, 3, n_resamples=100)
    assert r["difference"] == 1.0 and 0 < r["n_resamples"] < 100
    assert r["low"] == r["high"] == 1.0


PROBS = np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.5, 0.2, 0.3],
                  [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
LABELS = np.array([0, 0, 1, 1, 1, 2, 0, 1])  # class 2 has a single image: many resamples lose it


def test_classification_ap_interval():
    same = classification_ap_interval(PROBS, PROBS.copy(), LABELS, n_resamples=100)
    assert (same["difference"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    perfect = np.eye(3)[LABELS] * 0.9 + 0.1 / 3
    r = classification_ap_interval(torch.tensor(PROBS), torch.tensor(perfect), torch.tensor(LABELS), n_resamples=100)
    assert macro_auprc(PROBS, LABELS) < 0.9
    assert r["difference"] == pytest.approx(1.0 - macro_auprc(PROBS, LABELS))
    # A resample of only one class has no AP at all and is skipped; losing class 2 just drops it from the mean.
    assert 90 < r["n_resamples"] <= 100 and r["low"] >= 0.0 and r["high"] > 0.0
    assert r == classification_ap_interval(PROBS, perfect, LABELS, n_resamples=100)


def _smooth_case(n=8, h=40, w=24, seed=0):
    """Masks with a blob in most images, and maps = smooth noise plus a blurred copy of the mask."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n - 2):
        y, x = rng.integers(2, h - 12), rng.integers(2, w - 10)
        masks[i, y:y + rng.integers(2, 10), x:x + rng.integers(2, 8)] = True
    noise = ndimage.gaussian_filter(rng.random((n, h, w)), (0, 2, 2))
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    signal = ndimage.gaussian_filter(masks.astype(float), (0, 1.5, 1.5))
    maps = np.clip(0.5 * noise + 0.5 * signal, 0, 1).astype(np.float32)
    return maps, masks


@pytest.mark.parametrize("power", [1, 12])
def test_binned_all_images_close_to_exact(power):
    """Close to the exact metrics also when the scores crowd near 0, as a sigmoid map's do (power 12 puts 90% of
    the pixels below 0.001: one equal-width bin of 1024)."""
    maps, masks = _smooth_case()
    maps = maps ** power
    exact = segmentation_metrics(maps, masks)
    histograms = _pixel_histograms(maps, masks, region_weights(masks), 1024)
    binned = _binned_pixel_metrics(*(h.sum(axis=0) for h in histograms), max_fpr=0.3)
    for key in ("pixel_ap", "pixel_auroc", "aupro", "pixel_f1_max"):
        assert 0.2 < exact[key] < 0.999
        assert binned[key] == pytest.approx(exact[key], abs=0.01), key


def test_segmentation_identical_arms_and_determinism():
    maps, masks = _smooth_case()
    same = segmentation_intervals(maps, maps[:, None].copy(), masks, sigma=2.0, n_resamples=40)
    assert set(same) == set(METRIC_KEYS)
    for key, r in same.items():
        assert (r["difference"], r["low"], r["high"]) == (0.0, 0.0, 0.0), key
    arm = np.clip(maps + 0.3 * masks, 0, 1)
    first = segmentation_intervals(maps, arm, masks, sigma=2.0, n_resamples=40, seed=3)
    assert first == segmentation_intervals(maps, arm, masks, sigma=2.0, n_resamples=40, seed=3)


def test_segmentation_better_arm_and_exact_difference():
    maps, masks = _smooth_case()
    arm = np.clip(maps + 0.3 * masks, 0, 1)  # defect pixels scored higher in every image
    exact = {k: (b, a) for (k, b), a in zip(segmentation_metrics(maps, masks).items(),
                                             segmentation_metrics(arm, masks).values())}
    r = segmentation_intervals(maps, arm, torch.tensor(masks), sigma=2.0, n_resamples=60, exact=exact)
    for key in ("pixel_ap", "pixel_auroc", "aupro", "pixel_f1_max"):
        assert r[key]["low"] > 0, key
        assert r[key]["difference"] == pytest.approx(exact[key][1] - exact[key][0]), key
        assert r[key]["low"] <= r[key]["difference"] <= r[key]["high"], key


def test_segmentation_interval_moves_with_the_exact_difference():
    """Given exact values, the interval is shifted by the binning's error on all images: moving the exact
    difference by d moves both ends by d."""
    maps, masks = _smooth_case()
    arm = np.clip(maps + 0.1 * masks, 0, 1)
    exact = {k: (b, a) for (k, b), a in zip(segmentation_metrics(maps, masks).items(),
                                             segmentation_metrics(arm, masks).values())}
    plain = segmentation_intervals(maps, arm, masks, sigma=2.0, n_resamples=30)
    moved = segmentation_intervals(maps, arm, masks, sigma=2.0, n_resamples=30,
                                   exact={"pixel_ap": (exact["pixel_ap"][0], exact["pixel_ap"][1] + 0.05)})
    shift = moved["pixel_ap"]["difference"] - plain["pixel_ap"]["difference"]
    assert moved["pixel_ap"]["low"] == pytest.approx(plain["pixel_ap"]["low"] + shift)
    assert moved["pixel_ap"]["high"] == pytest.approx(plain["pixel_ap"]["high"] + shift)
    assert moved["pixel_auroc"] == plain["pixel_auroc"]


def test_segmentation_missing_class_in_resamples():
    maps, masks = _smooth_case(n=4)
    masks[1:] = False  # one defective image among four: many resamples have no defect at all
    r = segmentation_intervals(maps, maps * 0.9, masks, sigma=2.0, n_resamples=50)
    for key in METRIC_KEYS:
        assert 0 < r[key]["n_resamples"] < 50, key
    none = segmentation_intervals(maps, maps, np.zeros_like(masks), sigma=2.0, n_resamples=10)
    assert all(v["difference"] is None and v["low"] is None and v["n_resamples"] == 0 for v in none.values())


def test_unknown_auroc_intervals():
    rng = np.random.default_rng(0)
    unknown = np.r_[np.zeros(40, bool), np.ones(20, bool)]
    noise = rng.normal(size=60)
    weak = {"msp": noise + 0.3 * unknown, "energy": noise}
    strong = {"msp": noise + 3.0 * unknown, "energy": noise}
    out = unknown_auroc_intervals(weak, strong, unknown, n_resamples=300, seed=1)
    assert set(out) == {"msp_auroc", "energy_auroc"}
    from sklearn.metrics import roc_auc_score
    exact = roc_auc_score(unknown, strong["msp"]) - roc_auc_score(unknown, weak["msp"])
    assert out["msp_auroc"]["difference"] == pytest.approx(exact) and out["msp_auroc"]["low"] > 0
    assert out["energy_auroc"]["difference"] == 0.0 and out["energy_auroc"]["low"] == out["energy_auroc"]["high"] == 0.0
    # a resample can miss every unknown image: it is skipped, not counted as a tie
    few = np.r_[np.zeros(30, bool), np.ones(1, bool)]
    sparse = unknown_auroc_intervals({"msp": np.arange(31.0)}, {"msp": -np.arange(31.0)}, few, n_resamples=200)
    assert 0 < sparse["msp_auroc"]["n_resamples"] < 200
