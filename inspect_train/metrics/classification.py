"""Scores of a classifier's softmax outputs on a labelled test set.

Besides accuracy (which only looks at the argmax), the report needs ranking
metrics: average precision per class and its macro mean (AU-PR), and a
defect-vs-good view for inspection, where any defect flagged as "not good"
is useful even if its type is wrong. Curves and areas come from
scikit-learn; nothing is written by hand beyond choosing which classes have a
defined AP and averaging. Undefined values are None (not NaN) so the dict goes
straight into JSON.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score


def _as_probabilities(probabilities) -> np.ndarray:
    """Softmax scores as float64 (N, K), from a tensor or an array."""
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().cpu().double().numpy()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (N, K), got shape {probabilities.shape}")
    return probabilities


def _as_labels(labels, n: int) -> np.ndarray:
    """True class indices as int64 (N,)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} rows of probabilities")
    return labels


def class_average_precisions(probabilities, labels) -> dict[int, float]:
    """One-vs-rest AP of each class on its own softmax score, keyed by class index.

    Only classes with at least one positive and one negative image appear:
    without both there is no precision-recall curve, and scoring such a class
    0 or 1 would move the macro mean for reasons unrelated to the model.
    """
    probabilities = _as_probabilities(probabilities)
    labels = _as_labels(labels, probabilities.shape[0])
    result = {}
    for k in range(probabilities.shape[1]):
        positive = labels == k
        if positive.any() and not positive.all():
            result[k] = float(average_precision_score(positive, probabilities[:, k]))
    return result


def macro_auprc(probabilities, labels) -> float | None:
    """Macro mean of `class_average_precisions` (None when no class has one).

    The single definition of AU-PR, shared by the report and the paired
    bootstrap so both always measure the same thing.
    """
    return _macro_mean(class_average_precisions(probabilities, labels))


def _macro_mean(aps: dict) -> float | None:
    return float(np.mean(list(aps.values()))) if aps else None


def classification_metrics(probabilities, labels, class_names, good_class: str = "good") -> dict:
    """Accuracy, balanced accuracy, confusion matrix, per-class AP and AU-PR, and defect-vs-good AP/AUROC.

    `probabilities` (N, K) are softmax scores, `labels` (N,) indices into
    `class_names`. The defect-vs-good keys are present only when `good_class`
    is one of the classes: positives are all non-good images, scored by
    1 - p(good).
    """
    class_names = list(class_names)
    probabilities = _as_probabilities(probabilities)
    labels = _as_labels(labels, probabilities.shape[0])
    k = len(class_names)
    if probabilities.shape[1] != k:
        raise ValueError(f"probabilities have {probabilities.shape[1]} columns for {k} classes")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be in [0, {k}), got [{labels.min()}, {labels.max()}]")

    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, labels=list(range(k)))
    support = matrix.sum(axis=1)
    per_class_accuracy = {name: float(matrix[i, i] / support[i]) for i, name in enumerate(class_names) if support[i] > 0}
    aps = class_average_precisions(probabilities, labels)
    per_class_ap = {class_names[i]: value for i, value in aps.items()}
    result = {
        "accuracy": float((predicted == labels).mean()) if labels.size else None,
        "balanced_accuracy": float(np.mean(list(per_class_accuracy.values()))) if per_class_accuracy else None,
        "per_class_accuracy": per_class_accuracy,
        "confusion_matrix": matrix.tolist(),
        "classes": class_names,
        "n_test": int(labels.size),
        "per_class_ap": per_class_ap,
        "auprc": _macro_mean(aps),
    }
    if good_class in class_names:
        good = class_names.index(good_class)
        defect = labels != good
        score = 1.0 - probabilities[:, good]
        both = bool(defect.any()) and not bool(defect.all())
        result["defect_vs_good_ap"] = float(average_precision_score(defect, score)) if both else None
        result["defect_vs_good_auroc"] = float(roc_auc_score(defect, score)) if both else None
    return result
