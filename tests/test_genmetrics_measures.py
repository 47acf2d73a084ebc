"""The weight-free generator measures on hand-made masks and images: mask statistics, their distance, the
real-vs-generated two-sample test, diversity, the contact sheet and mask resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspect_train.genmetrics.contact_sheet import OUTLINE, contact_sheet
from inspect_train.genmetrics.diversity import mean_pairwise_distance
from inspect_train.genmetrics.mask_stats import mask_distance, mask_features, mask_iou_diversity, summarize
from inspect_train.genmetrics.random_features import RandomConvFeatures
from inspect_train.genmetrics.sources import resize_masks
from inspect_train.genmetrics.two_sample import classifier_features, two_sample_test

S = 32
YY, XX = np.mgrid[0:S, 0:S]


def disc(cy=15.5, cx=15.5, r=6.0) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r


def discs(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([disc(*rng.uniform(9, 23, 2), rng.uniform(3, 7)) for _ in range(n)])


def textures(n: int, rng: np.random.Generator) -> torch.Tensor:
    """Smooth random RGB surfaces (not pure noise): a base level, a gradient and a little grain."""
    level = rng.uniform(90, 160, (n, 3, 1, 1))
    slope = rng.uniform(-2, 2, (n, 1, 1, 1)) * XX[None, None]
    grain = rng.normal(0, 6, (n, 3, S, S))
    return torch.from_numpy(np.clip(level + slope + grain, 0, 255).astype(np.uint8))


def features_of(images: torch.Tensor, masks: np.ndarray):
    masks = torch.from_numpy(masks)[:, None]
    conv = RandomConvFeatures(images.shape[1])(images, masks)
    return classifier_features(conv, masks, mask_features(masks))


def test_masks_touching_the_border_and_8_connected_pieces():
    masks = np.zeros((4, S, S), dtype=bool)
    masks[0, 0, 5:9] = True              # top row
    masks[1, 10:14, S - 1] = True        # right column
    masks[2, S - 3:, 0:3] = True         # bottom-left corner
    masks[3, 5:20, 0] = True             # left column
    masks[3, 10, 10] = masks[3, 11, 11] = True  # a diagonal pair: one 8-connected piece
    masks[3, 25:27, 25:27] = True
    stats = mask_features(masks)
    assert summarize(stats)["border_fraction"] == 1.0
    assert stats["components"].tolist() == [1, 1, 1, 3]
    assert mask_features(disc()[None])["border"].tolist() == [0.0]


def test_disc_is_round_and_lines_have_their_direction():
    line = np.zeros((S, S), dtype=bool)
    line[16, 4:28] = True                            # horizontal, 24 pixels
    vertical = line.T.copy()
    rising = np.fliplr(np.eye(S, dtype=bool))        # bottom-left to top-right as the image is shown
    stats = mask_features(np.stack([disc(), line, vertical, rising]))
    assert stats["elongation"][0] == pytest.approx(1.0, abs=0.05)
    assert stats["orientation"][1] == pytest.approx(0.0, abs=1e-6) and stats["elongation"][1] == pytest.approx(24.0)
    assert stats["orientation"][2] == pytest.approx(90.0) and stats["orientation"][3] == pytest.approx(45.0)
    assert stats["centroid_x"][0] == pytest.approx(0.5) and stats["area"][1] == pytest.approx(24 / S**2)
    summary = summarize({k: v[1:2] for k, v in stats.items()})
    assert summary["orientation_abs_median_deg"] == pytest.approx(0.0, abs=1e-6)
    assert summary["elongation_median"] > 10


def test_identical_sets_are_indistinguishable():
    rng = np.random.default_rng(0)
    masks, images = discs(8, rng), textures(8, rng)
    stats = mask_features(masks)
    distance = mask_distance(stats, stats)
    assert distance["value"] == 0.0 and not distance["skipped"]
    x, blocks = features_of(images, masks)
    result = two_sample_test(x, x, blocks=blocks, seed=0)
    assert abs(result["accuracy"] - 0.5) <= 0.2
    assert result["copies_of_real"] == 8  # every 'generated' sample is a copy and is held out with its original


def test_fresh_draws_of_the_same_kind_are_near_chance_and_blank_masks_are_caught():
    rng = np.random.default_rng(1)
    real_masks, real_images = discs(10, rng), textures(10, rng)
    real_x, blocks = features_of(real_images, real_masks)
    same_x, _ = features_of(textures(40, rng), discs(40, rng))
    assert abs(two_sample_test(real_x, same_x, blocks=blocks, seed=0)["accuracy"] - 0.5) <= 0.2
    blank = np.zeros((40, S, S), dtype=bool)
    blank_x, _ = features_of(textures(40, rng), blank)
    result = two_sample_test(real_x, blank_x, blocks=blocks, seed=0)
    assert result["accuracy"] >= 0.9 and result["n_per_class"] == 10
    distance = mask_distance(mask_features(real_masks), mask_features(blank))
    assert distance["value"] > 1 and "log_elongation" in distance["skipped"]  # blank masks have no shape
    assert summarize(mask_features(blank))["empty_fraction"] == 1.0


def test_too_few_samples_give_a_reason_not_a_number():
    result = two_sample_test(np.zeros((1, 3)), np.zeros((5, 3)))
    assert result["accuracy"] is None and "at least 2" in result["why"]


def test_diversity_of_copies_is_zero():
    rng = np.random.default_rng(2)
    masks, images = discs(6, rng), textures(6, rng)
    m = torch.from_numpy(masks)[:, None]
    conv = RandomConvFeatures(3)(images, m)
    copies = RandomConvFeatures(3)(images[:1].repeat(5, 1, 1, 1), m[:1].repeat(5, 1, 1, 1))
    assert mean_pairwise_distance(copies) == pytest.approx(0.0, abs=1e-9)
    assert mean_pairwise_distance(conv) > 0.01
    assert mask_iou_diversity(np.repeat(masks[:1], 4, 0)) == 0.0 and mask_iou_diversity(masks) > 0.3
    assert mean_pairwise_distance(conv[:1]) is None


def test_random_features_are_fixed_whatever_the_global_seed():
    rng = np.random.default_rng(3)
    images, masks = textures(3, rng), torch.from_numpy(discs(3, rng))[:, None]
    torch.manual_seed(1)
    a = RandomConvFeatures(3)(images, masks)
    torch.manual_seed(2)
    b = RandomConvFeatures(3)(images, masks)
    assert np.array_equal(a, b)


def test_contact_sheet_draws_outlines_outside_the_mask(tmp_path):
    rng = np.random.default_rng(4)
    images = torch.full((3, 1, S, S), 128, dtype=torch.uint8)
    masks = torch.from_numpy(discs(3, rng))[:, None]
    sheet = contact_sheet([("real", images, masks), ("gen", images[:2], masks[:2])], "title", tmp_path / "s.png")
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert (tmp_path / "s.png").is_file()
    assert (sheet == np.array(OUTLINE, dtype=np.uint8)).all(-1).sum() > 50


def test_thin_masks_survive_shrinking():
    line = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    line[0, 0, 31, 5:60] = True  # one pixel wide: nearest neighbour at half size may miss every pixel
    small = resize_masks(line, (16, 16))
    assert small.shape == (2, 1, 16, 16) and small[0].any() and not small[1].any()
