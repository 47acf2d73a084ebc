"""Diversity of a set of samples: their mean pairwise distance on the fixed random conv net's features.

Distances are scipy's Euclidean `pdist` divided by sqrt(feature count) (a root-mean-square difference per
feature), averaged over all pairs. Identical copies score 0; a generator that repeats a few samples scores
well below the real base set, one that draws noise scores well above it. The units mean nothing alone:
read the number next to the real base set's own (the table's first row).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import pdist


def mean_pairwise_distance(features: np.ndarray) -> float | None:
    """Mean over the n(n-1)/2 pairs of rows of ||a - b|| / sqrt(D); None with fewer than 2 rows."""
    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] < 2:
        return None
    return float(pdist(features, "euclidean").mean() / math.sqrt(features.shape[1]))
