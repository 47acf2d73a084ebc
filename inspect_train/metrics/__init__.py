"""Evaluation metrics (segmentation: pixel AP/AUROC, AUPRO, image AUROC/AP, pixel F1 max)."""

from inspect_train.metrics.segmentation import METRIC_KEYS, segmentation_metrics

__all__ = ["METRIC_KEYS", "segmentation_metrics"]
