"""How well a classifier notices a defect type it never trained on (open-set recognition).

A shipped classifier meets new defect types; the question is whether its outputs show it. Two unknown scores,
both from the logits, higher meaning "more likely unknown":

- `msp`: 1 - the maximum softmax probability;
- `energy`: -logsumexp(logits), the negative log of the softmax's normaliser (low evidence for every class).

Each score is judged with the unknown images as positives: AUROC, AU-PR (average precision) and the
false-positive rate at 95% true-positive rate (the share of known images flagged when 95% of the unknown ones
are caught). Curves and areas come from scikit-learn; undefined values (no known or no unknown image) are None
so the dict goes straight into JSON.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

UNKNOWN_SCORES = {"msp": "1 - max softmax probability", "energy": "-logsumexp(logits)"}
OPEN_SET_METRICS = [f"{score}_{measure}" for score in UNKNOWN_SCORES for measure in ("auroc", "auprc", "fpr95")]
OPEN_SET_METRICS.append("closed_set_accuracy")


def _as_array(values, dtype) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def unknown_scores(logits) -> dict[str, np.ndarray]:
    """Per image, each unknown score (higher = more likely unknown) from logits (N, K)."""
    logits = torch.as_tensor(_as_array(logits, np.float64))
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    return {
        "msp": (1.0 - torch.softmax(logits, dim=1).max(dim=1).values).numpy(),
        "energy": (-torch.logsumexp(logits, dim=1)).numpy(),
    }


def fpr_at_tpr(is_unknown, score, tpr: float = 0.95) -> float | None:
    """The false-positive rate at the first threshold that catches at least `tpr` of the unknown images.

    Read off scikit-learn's roc_curve with every threshold kept (drop_intermediate=False), so the point where
    the TPR first reaches `tpr` is never dropped as collinear. None without both known and unknown images.
    """
    is_unknown = _as_array(is_unknown, bool).ravel()
    if is_unknown.all() or not is_unknown.any():
        return None
    fpr, tprs, _ = roc_curve(is_unknown, _as_array(score, np.float64).ravel(), drop_intermediate=False)
    return float(fpr[np.searchsorted(tprs, tpr - 1e-12, side="left")])


def open_set_metrics(logits, labels, is_unknown, scores: dict[str, np.ndarray] | None = None) -> dict:
    """Known-vs-unknown AUROC, AU-PR and FPR@95%TPR of each unknown score, and the closed-set accuracy.

    `labels` (N,) are class indices for known images (anything for unknown ones); `is_unknown` (N,) marks the
    images of the held-out type. The closed-set accuracy is the arg-max accuracy on the known images alone.
    `scores`: unknown_scores(logits) when the caller has them already.
    """
    logits = _as_array(logits, np.float64)
    is_unknown = _as_array(is_unknown, bool).ravel()
    labels = _as_array(labels, np.int64).ravel()
    if not logits.shape[0] == is_unknown.size == labels.size:
        raise ValueError(f"{logits.shape[0]} rows of logits, {labels.size} labels, {is_unknown.size} unknown flags")
    both = bool(is_unknown.any()) and not bool(is_unknown.all())
    result: dict = {}
    for name, score in (scores if scores is not None else unknown_scores(logits)).items():
        result[f"{name}_auroc"] = float(roc_auc_score(is_unknown, score)) if both else None
        result[f"{name}_auprc"] = float(average_precision_score(is_unknown, score)) if both else None
        result[f"{name}_fpr95"] = fpr_at_tpr(is_unknown, score)
    known = ~is_unknown
    hits = logits[known].argmax(axis=1) == labels[known]
    result["closed_set_accuracy"] = float(hits.mean()) if known.any() else None
    result["n_known"], result["n_unknown"] = int(known.sum()), int(is_unknown.sum())
    return result
