"""`inspect-train segment`: train a defect segmenter with in-loop synthetic defects."""

from inspect_train.commands._placeholder import register_pending


def register(subparsers) -> None:
    register_pending(subparsers, "segment", "train a defect segmenter with in-loop synthetic defects", "issue 5")
