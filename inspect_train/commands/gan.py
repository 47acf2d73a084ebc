"""`inspect-train gan`: DFMGAN training (fit-backbone, fit-defect, describe)."""

from inspect_train.commands._placeholder import register_pending


def register(subparsers) -> None:
    register_pending(subparsers, "gan", "DFMGAN training (fit-backbone, fit-defect, describe)", "issue 3")
