"""Validators of numbers a user gives, shared by a flag (as its argparse `type=`, on the flag's text) and by the
same setting in a preset or config.yaml, so both are refused with the same words. Generators' options use them
too (generators.spec.Option.type)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable


class Invalid(argparse.ArgumentTypeError):
    """A value a `Check` refuses; the message reads after the flag or key it was given for ("must be ...")."""


@dataclass(frozen=True)
class Check:
    """A validator, shared by a setting's flag (as argparse `type=`, on the flag's text) and its preset value:
    text becomes a `kind` number, a preset's number is kept as written; refused: Invalid("must be <wording>")."""

    kind: type  # int or float
    wording: str
    ok: Callable[[Any], bool]

    def __call__(self, value: Any) -> Any:
        number = value
        if isinstance(value, str):
            try:
                number = self.kind(value)
            except ValueError:
                number = None
        elif isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            number = None
        if number is None or not self.ok(number):
            raise Invalid(f"must be {self.wording} (got {value})")
        return number


positive_int = Check(int, "a positive integer", lambda n: n >= 1)
whole_number = Check(int, "0 or a positive integer", lambda n: n >= 0)
positive_float = Check(float, "positive", lambda n: n > 0)
fraction = Check(float, "between 0 and 1", lambda n: 0 <= n <= 1)
open_fraction = Check(float, "between 0 and 1, exclusive", lambda n: 0 < n < 1)
at_least_two = Check(int, "at least 2", lambda n: n >= 2)
no_cap_or_at_least_two = Check(int, "0 (no cap) or at least 2", lambda n: n == 0 or n >= 2)


def add_threads_flag(parser) -> None:
    """`--threads N`, the same flag in every command that runs torch."""
    parser.add_argument("--threads", metavar="N", type=positive_int, default=None,
                        help="CPU threads for torch (default: torch's)")
