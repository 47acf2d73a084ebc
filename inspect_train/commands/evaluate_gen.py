"""`inspect-train evaluate-gen`: KID and clustered LPIPS of generated defects."""

from inspect_train.commands._placeholder import register_pending


def register(subparsers) -> None:
    register_pending(subparsers, "evaluate-gen", "KID and clustered LPIPS of generated defects", "issue 6")
