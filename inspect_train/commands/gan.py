"""`inspect-train gan`: train a learned generator by hand. Each learned generator adds its own `gan fit-...`
subcommands (its spec's `add_commands`, built from generators.training_cli)."""

from __future__ import annotations

from generators.registry import learned_specs
from inspect_train.commands import COMMANDS


def register(subparsers) -> None:
    specs = learned_specs()
    gan = subparsers.add_parser("gan", help=COMMANDS["gan"][1], description="Train a learned generator by hand: "
                                + "; ".join(f"{s.name}: {s.summary}" for s in specs))
    sub = gan.add_subparsers(dest="gan_command", metavar="ACTION")
    sub.required = True
    for spec in specs:
        if spec.learned.add_commands:
            spec.learned.add_commands(sub)


