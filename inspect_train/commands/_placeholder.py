"""Temporary registration for command groups whose issue has not landed yet."""

from inspect_train.errors import InputError


def register_pending(subparsers, name: str, help_text: str, issue: str) -> None:
    parser = subparsers.add_parser(name, help=f"{help_text} [not yet available: {issue}]")

    def run(args):
        raise InputError(f"'{name}' is not available yet ({issue})")

    parser.set_defaults(func=run)
