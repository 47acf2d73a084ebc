"""Classification metrics against cases computed by hand."""

import json

import numpy as np
import pytest
import torch

from inspect_train.metrics.classification import class_average_precisions, classification_metrics, macro_auprc

CLASSES = ["good", "scratch", "dent"]
# Six images, two per class; rows are softmax scores over CLASSES.
PROBS = np.array([
    [0.7, 0.2, 0.1],  # good
    [0.4, 0.5, 0.1],  # good, predicted scratch
    [0.3, 0.6, 0.1],  # scratch
    [0.5, 0.3, 0.2],  # scratch, predicted good
    [0.2, 0.1, 0.7],  # dent
    [0.1, 0.3, 0.6],  # dent
])
LABELS = np.array([0, 0, 1, 1, 2, 2])


def test_perfect_scores():
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[labels] * 0.8 + 0.2 / 3
    m = classification_metrics(probs, labels, CLASSES)
    assert m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0
    assert m["per_class_ap"] == {"good": 1.0, "scratch": 1.0, "dent": 1.0}
    assert m["auprc"] == 1.0
    assert m["defect_vs_good_ap"] == 1.0 and m["defect_vs_good_auroc"] == 1.0
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_hand_case_three_classes():
    m = classification_metrics(torch.tensor(PROBS), torch.tensor(LABELS), CLASSES)
    # Argmax: good, scratch, scratch, good, dent, dent.
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class_accuracy"] == pytest.approx({"good": 0.5, "scratch": 0.5, "dent": 1.0})
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    # good by p(good): .7 P, .5 N, .4 P, ... -> 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # scratch by p(scratch): .6 P, .5 N, then .3 P tied with .3 N -> 1/2 * 1 + 1/2 * 2/4 = 3/4.
    # dent by p(dent): .7 P, .6 P first -> 1.
    assert m["per_class_ap"] == pytest.approx({"good": 5 / 6, "scratch": 3 / 4, "dent": 1.0})
    assert m["auprc"] == pytest.approx((5 / 6 + 3 / 4 + 1) / 3)
    assert macro_auprc(PROBS, LABELS) == pytest.approx(m["auprc"])
    # Defect vs good by 1 - p(good): .9 P, .8 P, .7 P, .6 N, .5 P, .3 N.
    # AP = 1/4 * (1 + 1 + 1 + 4/5) = 0.95; AUROC: 2 + 2 + 2 + 1 of 8 pairs ordered.
    assert m["defect_vs_good_ap"] == pytest.approx(0.95)
    assert m["defect_vs_good_auroc"] == pytest.approx(7 / 8)
    assert m["n_test"] == 6 and m["classes"] == CLASSES
    json.dumps(m)  # plain Python values only


def test_good_class_metrics_only_with_a_good_class():
    m = classification_metrics(PROBS, LABELS, ["ok", "scratch", "dent"])
    assert "defect_vs_good_ap" not in m and "defect_vs_good_auroc" not in m
    assert m["auprc"] == pytest.approx((5 / 6 + 3 / 4 + 1) / 3)
    # Naming another class as the good one is allowed.
    assert "defect_vs_good_ap" in classification_metrics(PROBS, LABELS, ["ok", "scratch", "dent"], good_class="ok")


def test_only_good_images_leave_defect_vs_good_undefined():
    m = classification_metrics(PROBS[:2], LABELS[:2], CLASSES)
    assert m["defect_vs_good_ap"] is None and m["defect_vs_good_auroc"] is None
    # A single class present: no class has both positives and negatives.
    assert m["per_class_ap"] == {} and m["auprc"] is None
    assert m["per_class_accuracy"] == {"good": 0.5}
    json.dumps(m)


def test_absent_class_left_out():
    probs = np.hstack([PROBS * 0.9, np.full((6, 1), 0.1)])  # a fourth class, "crack", never in the labels
    m = classification_metrics(probs, LABELS, CLASSES + ["crack"])
    assert set(m["per_class_ap"]) == {"good", "scratch", "dent"}
    assert set(m["per_class_accuracy"]) == {"good", "scratch", "dent"}
    assert m["auprc"] == pytest.approx((5 / 6 + 3 / 4 + 1) / 3)
    assert len(m["confusion_matrix"]) == 4
    assert set(class_average_precisions(probs, LABELS)) == {0, 1, 2}


def test_shape_errors():
    with pytest.raises(ValueError):
        classification_metrics(PROBS, LABELS, ["good", "scratch"])
    with pytest.raises(ValueError):
        classification_metrics(PROBS, LABELS[:5], CLASSES)
