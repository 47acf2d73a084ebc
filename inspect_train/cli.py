"""Command-line entry point: `inspect-train <command> ...`.

Each command group lives in its own module under `inspect_train.commands` and exposes `register(subparsers)`;
each training task (classify, segment, detect and any registered in inspect_train.tasks.registry) gets one
subcommand from its registry entry. Only the command being run is built with its flags (its module imported);
the others are listed with their one line. The parser sets `func` to the handler. Input errors become one line
on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import re
import sys

from inspect_train import __version__
from inspect_train.commands import BEFORE_TASKS, COMMANDS
from inspect_train.errors import EXIT_INPUT_ERROR, InputError
from inspect_train.output_paths import write_error_line
from inspect_train.tasks.registry import get_task, task_entries

def run_task(name: str, args) -> int:
    """Train and evaluate every arm of a task through the protocol runner (imported only when a task runs, so
    that building the parser needs no torch)."""
    from inspect_train.tasks.runner import run_command

    return run_command(get_task(name), args)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, that command's flags alone, every other command listed with its one
    line (COMMANDS, the task registry) and none of its flags, so `inspect-train --help` imports no command."""
    parser = argparse.ArgumentParser(
        prog="inspect-train",
        description="Train inspection models from a few real defects plus fresh synthetic ones every batch.",
    )
    parser.add_argument("--version", action="version", version=f"inspect-train {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    tasks = {entry.name: entry for entry in task_entries()}
    after = [name for name in COMMANDS if name not in BEFORE_TASKS]
    for name in (*BEFORE_TASKS, *tasks, *after):
        full = only is None or name == only
        if name in COMMANDS:
            module, line = COMMANDS[name]
            if full:
                importlib.import_module(f"inspect_train.commands.{module}").register(subparsers)
            else:
                subparsers.add_parser(name, help=line)
            continue
        entry = tasks[name]
        p = subparsers.add_parser(name, help=entry.help, description=entry.description)
        if full:
            entry.add_arguments(p)
            p.set_defaults(func=functools.partial(run_task, entry.name))
    _refuse_in_one_line(parser)
    return parser


def _one_line_error(parser: argparse.ArgumentParser, message: str) -> None:
    """argparse's refusal as one line, as the command's other input errors read ("--steps must be ...")."""
    message = re.sub(r"^argument ([^:]+): (?=must be )", r"\1 ", message)
    parser.exit(EXIT_INPUT_ERROR, f"{parser.prog}: error: {message}\n")


def _refuse_in_one_line(parser: argparse.ArgumentParser) -> None:
    """Every parser and subparser reports a bad flag in one line, without the usage block."""
    parser.error = functools.partial(_one_line_error, parser)
    for action in parser._actions:  # argparse exposes subparsers only through this list
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _refuse_in_one_line(child)


def command_of(argv: list[str]) -> str:
    """The command word of an argument list ("" when there is none: `inspect-train --help`)."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(only=command_of(argv)).parse_args(argv)
    except SystemExit as stop:  # argparse refused a flag (one line on stderr already), or --help / --version
        return stop.code if isinstance(stop.code, int) else EXIT_INPUT_ERROR
    try:
        result = args.func(args)
    except InputError as err:
        print(f"inspect-train: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("inspect-train: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # a place that cannot be written (a full disk, a folder made read-only meanwhile)
        line = write_error_line(err)
        if line is None:
            raise
        print(f"inspect-train: error: {line}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
