"""A realism two-sample test: can a small classifier tell the real base defects from generated ones?

The real base set (label 0) and as many generated samples (label 1) are matched into pairs, one real and
one generated, and the pairs are split into k folds; a logistic regression (liblinear, on standardised
features, each feature block weighted equally) is fitted on the other folds and scored on the held-out
one. The mean held-out accuracy reads directly: 0.5 = the classifier cannot tell them apart (as good as it
gets), 1.0 = every generated sample is told from the real ones. It is repeated on several draws of
generated samples (disjoint while there are enough); the std over all folds is reported with the mean,
since a base set of a few images makes each fold's accuracy coarse.

Why pairs (hand-written, a few lines; scaling and classifier are scikit-learn's): whole pairs keep every
training set and held-out fold exactly balanced. With a few images per class, unbalanced folds score well
below chance when the two sets do not differ at all (the held-out class is the minority in training). A
generated sample identical to a real one (a copy) is paired with it, so both are held out together;
otherwise the classifier would be tested on a sample it was trained on under the other label. The number
of such copies is reported (`copies_of_real`: a generator returning its training images).

Features (`classifier_features`): the random conv net's (random_features.py), the mask pooled to 8x8 (where
the defect sits) and the per-mask statistics of mask_stats.py (empty masks: 0 plus an 'empty' flag).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from inspect_train.genmetrics.mask_stats import DISTANCE_FEATURES, distance_column

LAYOUT = 8


def mask_feature_matrix(features: dict[str, np.ndarray]) -> np.ndarray:
    """(N, len(DISTANCE_FEATURES) + 1): the mask statistics, NaN (empty mask) -> 0, plus an empty flag."""
    n = features["area"].shape[0]
    columns = [np.nan_to_num(distance_column(features, name), nan=0.0) for name in DISTANCE_FEATURES]
    columns.append((features["components"] == 0).astype(np.float64))
    return np.stack(columns, 1) if n else np.zeros((0, len(DISTANCE_FEATURES) + 1))


def classifier_features(conv_features: np.ndarray, masks: torch.Tensor,
                        mask_features: dict[str, np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """What the classifier sees of each sample, conv features | mask layout (8x8 average) | mask statistics,
    and the width of each of these blocks."""
    layout = F.adaptive_avg_pool2d(masks.float().cpu(), LAYOUT).flatten(1).double().numpy()
    stats = mask_feature_matrix(mask_features)
    return np.concatenate([conv_features, layout, stats], 1), [conv_features.shape[1], layout.shape[1], stats.shape[1]]


def block_weights(blocks: list[int] | None, width: int) -> np.ndarray:
    """1/sqrt(block width) per feature, so each block has the same total variance after standardising: the
    8 mask statistics weigh as much as the 352 conv features (with the L2 penalty, unweighted, the many conv
    features drown a difference that only the mask shows)."""
    if not blocks:
        return np.ones(width)
    if sum(blocks) != width:
        raise ValueError(f"blocks {blocks} do not add up to {width} features")
    return np.concatenate([np.full(b, 1 / np.sqrt(b)) for b in blocks])


def match_pairs(real: np.ndarray, generated: np.ndarray, rng: np.random.Generator, tol: float = 1e-6) -> tuple[np.ndarray, int]:
    """For equal-sized real and generated rows: the generated row paired with each real row. A generated row
    equal (within tol, relative) to a real row is paired with it; the rest are paired at random. Also
    returns how many generated rows were copies of a real row."""
    d = cdist(generated, real)
    hits = d <= tol * (1.0 + np.linalg.norm(real, axis=1))[None, :]
    partner = np.full(len(real), -1)
    for g in np.nonzero(hits.any(1))[0]:
        free = [r for r in np.nonzero(hits[g])[0] if partner[r] < 0]
        if free:
            partner[free[0]] = g
    rest = rng.permutation(np.setdiff1d(np.arange(len(generated)), partner[partner >= 0]))
    partner[partner < 0] = rest[: int((partner < 0).sum())]
    return partner, int(hits.any(1).sum())


def _weigh(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return x * weights


def two_sample_test(real: np.ndarray, generated: np.ndarray, *, blocks: list[int] | None = None, folds: int = 5,
                    repeats: int = 5, seed: int = 0, C: float = 1.0) -> dict:
    """Cross-validated accuracy of telling `real` (N_r, D) from `generated` (N_g, D) feature rows; `blocks`: the
    widths of the feature groups to weigh equally (see block_weights)."""
    m = min(len(real), len(generated))
    if m < 2:
        return {"accuracy": None, "std": None, "n_per_class": m,
                "why": f"needs at least 2 real and 2 generated samples (have {len(real)} and {len(generated)})"}
    k = min(folds, m)
    weights = block_weights(blocks, real.shape[1])
    rng = np.random.default_rng(seed)
    gen_order = rng.permutation(len(generated))
    accuracies, copies = [], 0
    for r in range(repeats):
        if (r + 1) * m <= len(generated):
            gen_idx = gen_order[r * m:(r + 1) * m]
        else:
            gen_idx = rng.choice(len(generated), m, replace=False)
        real_rows = real if len(real) == m else real[rng.choice(len(real), m, replace=False)]
        gen_rows = generated[gen_idx]
        partner, found = match_pairs(real_rows, gen_rows, rng)
        copies += found
        gen_rows = gen_rows[partner]  # row i of each side is pair i
        for held in np.array_split(rng.permutation(m), k):
            train = np.setdiff1d(np.arange(m), held)
            model = make_pipeline(StandardScaler(), FunctionTransformer(_weigh, kw_args={"weights": weights}),
                                  LogisticRegression(C=C, solver="liblinear", max_iter=2000))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(np.concatenate([real_rows[train], gen_rows[train]]), np.r_[np.zeros(len(train)), np.ones(len(train))])
            predicted = model.predict(np.concatenate([real_rows[held], gen_rows[held]]))
            accuracies.append(float((predicted == np.r_[np.zeros(len(held)), np.ones(len(held))]).mean()))
    acc = np.asarray(accuracies)
    return {"accuracy": float(acc.mean()), "std": float(acc.std()), "n_per_class": m, "folds": k, "repeats": repeats,
            "copies_of_real": round(copies / repeats, 2),
            "classifier": f"StandardScaler, blocks weighted 1/sqrt(width) {list(blocks or [])}, LogisticRegression(C={C}, "
                          "liblinear); k-fold over real/generated pairs"}
