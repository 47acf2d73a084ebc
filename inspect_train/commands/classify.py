"""`inspect-train classify`: train a defect classifier with in-loop synthetic defects."""

from inspect_train.commands._placeholder import register_pending


def register(subparsers) -> None:
    register_pending(subparsers, "classify", "train a defect classifier with in-loop synthetic defects", "issue 4")
