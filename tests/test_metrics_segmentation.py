"""Segmentation metrics against cases computed by hand."""

import math

import numpy as np
import pytest
import torch

from inspect_train.metrics.segmentation import (
    METRIC_KEYS,
    aupro,
    image_ap,
    image_auroc,
    image_scores,
    pixel_ap,
    pixel_auroc,
    pixel_f1_max,
    region_weights,
    segmentation_metrics,
)

# Two 1x4 images. Image A: defect region {0,1} (size 2); image B: defect region {3} (size 1).
MASKS = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 1]]], dtype=bool)
MAPS = np.array([[[0.9, 0.2, 0.8, 0.1]], [[0.3, 0.4, 0.05, 0.7]]], dtype=np.float32)


def test_hand_case_pixel_metrics():
    # Positives 0.9, 0.2, 0.7 vs 5 negatives 0.8, 0.1, 0.3, 0.4, 0.05: 5 + 2 + 4 = 11 of 15 pairs ordered.
    assert pixel_auroc(MAPS, MASKS) == pytest.approx(11 / 15)
    # Ranking: P N P N N P N N -> AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 1/2 = 13/18.
    assert pixel_ap(MAPS, MASKS) == pytest.approx(13 / 18)
    # Best F1: threshold 0.7 (TP 2, FP 1, FN 1) or 0.2 (TP 3, FP 3): 2/3.
    assert pixel_f1_max(MAPS, MASKS) == pytest.approx(2 / 3)


def test_hand_case_aupro():
    # Curve (FPR, PRO): (0, 0) -> (0, .25) [0.9: half of region A] -> (.2, .25) [0.8] -> (.2, .75) [0.7: region B]
    # -> (.4, .75). Area up to FPR 0.3: 0.2 * 0.25 + 0.1 * 0.75 = 0.125, divided by 0.3.
    assert aupro(MAPS, MASKS) == pytest.approx(0.125 / 0.3)
    # Up to FPR 0.2 only the first step counts: 0.2 * 0.25 / 0.2.
    assert aupro(MAPS, MASKS, max_fpr=0.2) == pytest.approx(0.25)


def test_aupro_weights_regions_not_pixels():
    # A big region fully found and a 1-pixel region missed: PRO is 1/2 although 8 of 9 defect pixels are found.
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, :2, :4] = True  # 8 pixels
    masks[0, 5, 5] = True  # 1 pixel
    maps = masks.astype(np.float32)
    maps[0, 5, 5] = -1.0  # scored below every good pixel
    assert aupro(maps, masks) == pytest.approx(0.5)
    # Tied with the 27 good pixels instead: the curve rises on the diagonal from (0, .5) to (1, 1),
    # so the area up to 0.3 is 0.3 * 0.5 + 0.5 * 0.3^2 / 2 = 0.1725, over 0.3.
    maps[0, 5, 5] = 0.0
    assert aupro(maps, masks) == pytest.approx(0.1725 / 0.3)
    assert pixel_auroc(maps, masks) < 1.0


def test_region_weights_eight_connected():
    masks = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 0]]], dtype=bool)  # diagonal neighbours: one region of 2
    weights = region_weights(masks)
    assert weights[0, 0, 0] == pytest.approx(0.5) and weights[0, 1, 1] == pytest.approx(0.5)
    assert weights[0, 2, 2] == 1.0


def _toy_set():
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 8:12, 9:14] = True  # images 2 and 3 are good
    return masks


def test_perfect_predictions():
    masks = _toy_set()
    result = segmentation_metrics(masks.astype(np.float32), masks, sigma=1.0)
    assert set(result) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert result[key] == pytest.approx(1.0), key


def test_inverted_predictions():
    masks = _toy_set()
    maps = 1.0 - masks.astype(np.float32)
    assert pixel_auroc(maps, masks) == pytest.approx(0.0)
    assert aupro(maps, masks) == pytest.approx(0.0)
    # Inverted at image level: good images score high everywhere, defect images low.
    image_maps = np.where(masks.any(axis=(1, 2))[:, None, None], 0.1, 0.9).astype(np.float32) * np.ones_like(maps)
    assert image_auroc(image_maps, masks, sigma=2.0) == pytest.approx(0.0)
    assert image_ap(image_maps, masks, sigma=2.0) == pytest.approx(0.5)  # both positives ranked last: (1/3+2/4)/2


def test_constant_predictions():
    masks = _toy_set()
    maps = np.full(masks.shape, 0.5, dtype=np.float32)
    p = masks.mean()
    result = segmentation_metrics(maps, masks, sigma=1.0)
    assert result["pixel_auroc"] == pytest.approx(0.5)
    assert result["pixel_ap"] == pytest.approx(p)
    assert result["pixel_f1_max"] == pytest.approx(2 * p / (1 + p))
    # One threshold: the PRO curve is the diagonal, area 0.3^2 / 2 over 0.3.
    assert result["aupro"] == pytest.approx(0.15)
    assert result["image_auroc"] == pytest.approx(0.5)
    assert result["image_ap"] == pytest.approx(0.5)


def test_image_scores_hand_case():
    masks = np.zeros((3, 1, 4), dtype=bool)
    masks[0, 0, 0] = masks[1, 0, 3] = True
    maps = np.zeros((3, 1, 4), dtype=np.float32)
    maps[0, 0, 1], maps[1, 0, 0], maps[2, 0, 2] = 0.9, 0.7, 0.8  # ranking: defect, good, defect
    assert image_scores(maps, sigma=0).tolist() == pytest.approx([0.9, 0.7, 0.8])
    assert image_auroc(maps, masks, sigma=0) == pytest.approx(0.5)
    assert image_ap(maps, masks, sigma=0) == pytest.approx((1 + 2 / 3) / 2)


def test_smoothing_stays_inside_each_image():
    maps = np.zeros((2, 9, 9), dtype=np.float32)
    maps[0, 4, 4] = 1.0
    scores = image_scores(torch.from_numpy(maps)[:, None], sigma=1.0)
    assert 0 < scores[0] < 1.0  # one hot pixel is spread out
    assert scores[1] == 0.0


def test_undefined_metrics_are_nan():
    masks = np.ones((2, 4, 4), dtype=bool)[:, None]  # no good pixel, no good image
    result = segmentation_metrics(np.random.default_rng(0).random((2, 1, 4, 4)), masks)
    assert math.isnan(result["pixel_auroc"]) and math.isnan(result["image_auroc"]) and math.isnan(result["aupro"])


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        segmentation_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), dtype=bool))
