"""Downstream models: timm classifiers (and, from the segment task, segmenters)."""

from inspect_train.models.classifier import build_classifier, check_model_args

__all__ = ["build_classifier", "check_model_args"]
