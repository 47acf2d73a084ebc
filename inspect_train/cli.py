"""Command-line entry point: `inspect-train <command> ...`.

Each command group lives in its own module under `inspect_train.commands` and
exposes `register(subparsers)`; the parser sets `func` to the handler. Input
errors become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from inspect_train import __version__
from inspect_train.errors import EXIT_INPUT_ERROR, InputError

COMMAND_MODULES = ("data", "gan", "generate", "classify", "segment", "detect", "evaluate_gen", "predict", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspect-train",
        description="Train inspection models from a few real defects plus fresh synthetic ones every batch.",
    )
    parser.add_argument("--version", action="version", version=f"inspect-train {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"inspect_train.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except InputError as err:
        print(f"inspect-train: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("inspect-train: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
