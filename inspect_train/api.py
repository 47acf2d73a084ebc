"""The Python API: every command as a function taking the command's options as keyword arguments.

    from inspect_train import classify, evaluate_gen, predict

    run = classify(data="DIR", category="hazelnut", aug=["crop-paste", "perlin"], partitions=[1], steps=800)
    run.results["summary"]          # what results.json holds; run.out is the run's folder
    predict(model=run.out / "P1" / "perlin" / "model.pt", images=["new_parts/"], out="preds")

Each keyword is the command's flag with `_` for `-` (`batch_size=16` is `--batch-size 16`; `quiet=True` is
`--quiet`; a list is the flag's several values). The options go through the command line's own parser, so a
function and its command accept the same options with the same defaults and checks, and the CLI is this layer
with argv in front. Bad input raises inspect_train.errors.InputError with the same one-line message the command
prints.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspect_train.errors import InputError
from inspect_train.tasks.registry import get_task

__all__ = ["Run", "classify", "segment", "detect", "train", "evaluate_gen", "generate", "predict", "export"]


@dataclass
class Run:
    """What a command wrote: its output folder and the results it wrote there (results.json, generate.json,
    predictions.csv rows or the exported file's record)."""

    out: Path
    results: Any


def _subparser(parser: argparse.ArgumentParser, command: list[str]) -> argparse.ArgumentParser:
    for word in command:
        choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        parser = choices[word]
    return parser


def _argv(parser: argparse.ArgumentParser, command: list[str], options: dict[str, Any]) -> list[str]:
    """The flags for `options`, written as the command's parser reads them (a repeatable flag once per value)."""
    actions = {a.dest: a for a in _subparser(parser, command)._actions if a.option_strings}
    argv = []
    for key, value in options.items():
        action = actions.get(key)
        if action is None:
            raise InputError(f"{' '.join(command)}: unknown option '{key}' (known: {', '.join(sorted(actions))})")
        flag = action.option_strings[-1]
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            if isinstance(action, argparse._AppendAction):
                for item in value:
                    argv += [flag, str(item)]
            else:
                argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def parse(command: list[str], options: dict[str, Any]):
    """The namespace the command line would build for `inspect-train <command> <options as flags>`."""
    from inspect_train.cli import build_parser  # import cycle: cli imports inspect_train, whose __init__ imports this

    parser = build_parser(only=command[0])
    argv = [*command, *_argv(parser, command, options)]
    try:
        return parser.parse_args(argv)
    except SystemExit:  # argparse has printed why on stderr
        raise InputError(f"invalid options for {' '.join(command)}: {' '.join(argv[len(command):])}") from None


def train(task: str, **options) -> Run:
    """Train and evaluate every arm of a registered task (classify, segment, detect, or one a plug-in registers)
    through the protocol runner; on the other ranks of a torchrun group the results are None."""
    from inspect_train.tasks.runner import run_task  # keeps `import inspect_train` free of torch (the runner needs it)

    done = run_task(get_task(task), parse([task], options))
    return Run(*done) if done else Run(Path(options.get("out") or "."), None)


def classify(**options) -> Run:
    """`inspect-train classify`: which defect is it? Every `aug` arm next to the real-only baseline."""
    return train("classify", **options)


def segment(**options) -> Run:
    """`inspect-train segment`: where is the defect? Every `aug` arm next to the real-only baseline."""
    return train("segment", **options)


def detect(**options) -> Run:
    """`inspect-train detect`: boxes around each defect. Every `aug` arm next to the real-only baseline."""
    return train("detect", **options)


def evaluate_gen(**options) -> Run:
    """`inspect-train evaluate-gen`: judge generators against a partition's base set, before any training."""
    from inspect_train.commands.evaluate_gen import evaluate_generators  # keeps `import inspect_train` free of torch

    return Run(*evaluate_generators(parse(["evaluate-gen"], options)))


def generate(**options) -> Run:
    """`inspect-train generate`: write a learned generator's samples; results: the generate.json record."""
    args = parse(["generate"], options)
    args.func(args)
    out = Path(args.out)
    return Run(out, json.loads((out / "generate.json").read_text()))


def predict(**options) -> Run:
    """`inspect-train predict`: run a model file on new images; results: the rows of predictions.csv."""
    from inspect_train.commands.predict import CSV_NAME  # keeps `import inspect_train` free of torch

    args = parse(["predict"], options)
    args.func(args)
    out = Path(args.out)
    with (out / CSV_NAME).open(newline="") as handle:
        return Run(out, list(csv.DictReader(handle)))


def export(**options) -> Run:
    """`inspect-train export`: write a model file as ONNX or TorchScript; out: the exported file."""
    from inspect_train.commands.export import default_out  # keeps `import inspect_train` free of torch

    args = parse(["export"], options)
    args.func(args)
    path = Path(args.out) if args.out else default_out(Path(args.model), args.format)
    return Run(path, {"format": args.format, "model": str(args.model)})
