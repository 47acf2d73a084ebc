"""What an arm's name spells: `<generator>[+<generator>...][+<mode>]`.

`perlin` draws from one generator; `crop-paste+perlin` is a mixture (each synthetic sample from one of its
generators); `perlin+types` and `crop-paste+perlin+hard` are steered (inspect_train.steering). The real-only arms
(`none`, `classic`) are their own names. Kept free of torch: the command line reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspect_train.errors import InputError

STEER_MODES = ("off", "types", "hard")
MIX = "+"


@dataclass(frozen=True)
class ArmPlan:
    """What an arm draws: the generators it mixes (none for a real-only arm) and how it is steered."""

    name: str
    generators: tuple[str, ...]
    steer: str = "off"


def parse_arm(name: str, real_only: tuple[str, ...] = ()) -> ArmPlan:
    """The plan an arm's name spells (see the module docstring); a real-only arm is its own name."""
    if name in real_only:
        return ArmPlan(name, ())
    parts = name.split(MIX)
    steer = parts.pop() if len(parts) > 1 and parts[-1] in STEER_MODES[1:] else "off"
    return ArmPlan(name, tuple(parts), steer)


def arm_names(augs: list[str], steers: list[str], real_only: tuple[str, ...]) -> list[str]:
    """Each generator arm once per steering mode (`off`: its plain name); real-only arms are never steered."""
    names = []
    for aug in augs:
        if aug in real_only:
            names.append(aug)
            continue
        names += [aug if mode == "off" else f"{aug}{MIX}{mode}" for mode in steers]
    return list(dict.fromkeys(names))


def check_mixture(aug: str, generator_names: list[str], real_only: tuple[str, ...]) -> None:
    """An --aug value: one generator, a real-only arm, or generators joined by '+', each once."""
    if aug in real_only or aug in generator_names:
        return
    parts = aug.split(MIX)
    for part in parts:
        if part in real_only:
            raise InputError(f"--aug {aug}: '{part}' draws no synthetic sample and cannot be mixed")
        if part in STEER_MODES:
            raise InputError(f"--aug {aug}: steer with --steer {part}, not in the --aug name")
        if part not in generator_names:
            raise InputError(f"--aug {aug}: '{part}' is not a generator (choose from {', '.join(generator_names)}, "
                             f"or join several with '{MIX}')")
    if len(set(parts)) != len(parts):
        raise InputError(f"--aug {aug}: a generator appears twice in the mixture")


def references(arm: str, arms: list[str], real_only: tuple[str, ...] = ()) -> list[str]:
    """The arms of the same run that this one is also paired against (besides the baseline): a steered arm
    against its generators unsteered, a mixture against each of its generators steered the same way."""
    plan = parse_arm(arm, real_only)
    found = []
    if plan.generators and plan.steer != "off":
        found.append(MIX.join(plan.generators))
    if len(plan.generators) > 1:
        found += [g if plan.steer == "off" else f"{g}{MIX}{plan.steer}" for g in plan.generators]
    return [name for name in dict.fromkeys(found) if name in arms and name != arm]
