"""`inspect-train generate`: write synthetic defect images, masks and boxes."""

from inspect_train.commands._placeholder import register_pending


def register(subparsers) -> None:
    register_pending(subparsers, "generate", "write synthetic defect images, masks and boxes", "issue 3")
