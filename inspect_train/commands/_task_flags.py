"""The flags every training task takes (classify, segment, detect), with one meaning each.

A flag that sets a setting is built from the setting's declaration in the task's settings class
(inspect_train.settings: flag, help, and its validator as argparse `type=`), so a bad value is refused here, in
one line with exit code 2, before anything runs. Values left at None fall back to the task's preset, so a flag the
user did not give never overrides a preset.
"""

from __future__ import annotations

import dataclasses

from generators.registry import aug_names, specs
from inspect_train.settings import TaskSettings, declarations
from inspect_train.arms import STEER_MODES
from inspect_train.validators import positive_float, positive_int

DEFAULT_AUG = "crop-paste"


def add_generator_flags(p, command: str) -> None:
    """Each generator option that has a flag for `command`, as its spec declares it (default None: the preset's).
    Generators that share a flag (the painters' --mask-source) share its declaration: it is added once and sets
    that option of each; two different declarations of one flag are refused (one flag, one meaning)."""
    added: dict[str, tuple[str, object]] = {}
    for spec in specs():
        for option in spec.options:
            if option.flag and command in option.commands:
                if option.flag in added:
                    first, declared = added[option.flag]
                    if declared != option:
                        raise ValueError(f"generators '{first}' and '{spec.name}' declare {option.flag} differently; "
                                         "a shared flag must be one declaration (one meaning)")
                    continue
                added[option.flag] = (spec.name, option)
                p.add_argument(option.flag, dest=option.dest, type=option.type, choices=option.choices,
                               metavar=option.metavar, default=None, help=option.help)


def add_task_arguments(p, task: str, toy_preset: str, data_preset: str, model_help: str,
                       settings_class: type | None = None) -> None:
    """The task flags; those of `settings_class` (default TaskSettings) come from its declarations, its own (the
    ones TaskSettings does not declare, e.g. --with-good) after the common ones."""
    fields = {f.name: f for f in dataclasses.fields(settings_class or TaskSettings)}
    todo = {name: s for name, s in declarations(settings_class or TaskSettings).items() if s.flag}

    def setting_flag(group, name: str, **override) -> None:
        declared = todo.pop(name)
        if isinstance(fields[name].default, bool):
            kwargs = {"action": "store_true", "help": declared.help}
        else:
            kwargs = {"type": declared.check, "metavar": declared.metavar, "help": declared.help}
        group.add_argument(declared.flag, **{**kwargs, **override})

    augs = aug_names()
    p.add_argument("--data", help="dataset root in MVTec AD layout (omit to use the built-in toy dataset)")
    p.add_argument("--category", help="category folder under --data (required with --data)")
    p.add_argument("--aug", nargs="+", default=[DEFAULT_AUG], metavar="AUG",
                   help="arms to train next to the real-only baseline, one or more of: " + ", ".join(augs) +
                        f" (default {DEFAULT_AUG}). none: real only (the baseline itself); classic: flips, turns and "
                        "colour jitter on the real images; the others draw fresh synthetic defects every batch; "
                        "generators joined by '+' (crop-paste+perlin) make one arm drawing from each in turn")
    p.add_argument("--steer", nargs="+", choices=STEER_MODES, default=["off"], metavar="MODE",
                   help="train each generator arm once per mode: off (the plain arm), types (more samples of the "
                        "defect types with a high running training loss: arm <aug>+types), hard (keep the hardest "
                        "of --steer-candidates samples under the current model: <aug>+hard); default off")
    p.add_argument("--no-baseline", action="store_true", help="skip the real-only baseline arm (none)")
    p.add_argument("--partitions", type=positive_int, nargs="+", default=[1, 2, 3], metavar="K",
                   help="partitions of the manifest to run (default 1 2 3)")
    p.add_argument("--manifest", help="manifest.json to use (default: make one with --seed and keep it in --out)")
    p.add_argument("--config", help=f"YAML preset: a name in configs/ or a path, e.g. a run's config.yaml (default "
                                    f"{toy_preset} without --data, {data_preset} with it)")
    setting_flag(p, "model", help=model_help)
    setting_flag(p, "weights")
    sched = p.add_mutually_exclusive_group()
    setting_flag(sched, "steps")
    sched.add_argument("--epochs", type=positive_float,
                       help="alternatively, passes over the partition's real training images at --batch-size")
    for name in ("batch_size", "synthetic_ratio", "lr", "resolution"):
        setting_flag(p, name)
    p.add_argument("--generators", help="folder of learned generators to reuse and add missing ones to (default "
                                        "OUT/generators)")
    add_generator_flags(p, task)
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the model init and every sample (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    setting_flag(p, "cpu_threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", help=f"output folder (default runs/{task}-<arms>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="read back the arms already finished in --out (each keeps P<k>/<arm>/finished.pt) instead of "
                        "training them again; they must have the same settings, data, split and seed. Resumes a "
                        "stopped run, or assembles one run from commands that each ran some --aug / --partitions "
                        "into the same --out")
    for name in list(todo):  # the task's own settings flags
        setting_flag(p, name)
