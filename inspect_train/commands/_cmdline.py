"""The command a run records in its outputs, rebuilt from the parsed arguments.

Built from `args` rather than sys.argv so it is right when a command is called
from Python (tests, notebooks) and shows the defaults that were filled in.
"""

from __future__ import annotations

import shlex


def command_line(command: str, args, negated: dict[str, str] | None = None) -> str:
    """`inspect-train <command> --flag value ...`; `negated` maps a store_false dest to its flag (baseline -> --no-baseline)."""
    negated = negated or {}
    parts = ["inspect-train", command]
    for key, value in vars(args).items():
        if key in ("func", "command") or value is None:
            continue
        if key in negated:
            if value is False:
                parts.append(negated[key])
            continue
        if value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)
