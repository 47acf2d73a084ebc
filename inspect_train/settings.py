"""One settings flow for every task: preset (configs/<task>-*.yaml) -> dataclass -> command-line flags.

Each setting is declared once, as a dataclass field made by `setting(...)`: its default, the validator its value
goes through wherever it comes from (a `Check`: a preset, a run's config.yaml, a flag) and, where users set it per
run, its command-line flag and help. inspect_train.commands._task_flags builds the flags from these declarations
(the validator is the flag's argparse `type=`); `resolve_settings` reads a flag's value into the field that
declares it. A subclass may give a field another default with a plain annotation; the declaration is kept.

The resolved settings are written to `OUT/config.yaml` when a run starts; that file is itself a preset
(its `run:` section, which records what was run, is ignored when it is read back), so
`--config OUT/config.yaml` repeats a run's settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from generators.registry import get_spec, specs
from inspect_train.config_files import read_preset
from inspect_train.errors import InputError
from inspect_train.validators import Check, Invalid, fraction, open_fraction, positive_float, positive_int, whole_number


@dataclass(frozen=True)
class Setting:
    """A field's declaration (under the field's metadata key "setting"). `apply(settings, value)`, when set, is
    what the flag does instead of setting the field (--encoder sets models.<model>.encoder)."""

    check: Check | None = None
    flag: str | None = None
    help: str | None = None
    metavar: str | None = None
    apply: Callable[[Any, Any], None] | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def setting(default: Any = None, *, factory: Callable[[], Any] | None = None, **declared) -> Any:
    """A settings field: its default (or `factory`) and its Setting (check, flag, help, metavar, apply)."""
    metadata = {"setting": Setting(**declared)}
    return field(default_factory=factory, metadata=metadata) if factory else field(default=default, metadata=metadata)


def model_key(key: str) -> Callable[[Any, Any], None]:
    """A flag's `apply` that sets `key` of the chosen model's entry under `models` (--encoder)."""
    def apply(settings, value) -> None:
        if value:
            settings.models = {**settings.models, settings.model: {**settings.model_config(), key: value}}
    return apply


def declarations(settings_class: type) -> dict[str, Setting]:
    """Every field's Setting by name, in field order: the nearest class's that declares it (a plain subclass
    annotation changes only the default), else an empty one."""
    found: dict[str, Setting] = {}
    for klass in reversed(settings_class.__mro__):
        for f in vars(klass).get("__dataclass_fields__", {}).values():
            if "setting" in f.metadata:
                found[f.name] = f.metadata["setting"]
    return {f.name: found.get(f.name, Setting()) for f in dataclasses.fields(settings_class)}


def renamed_keys() -> dict[str, str]:
    """Former preset keys -> their names now (each generator's own are in its spec)."""
    return {"generator_options": "generators",
            **{old: f"generators.{spec.name}.{key}" for spec in specs() for old, key in spec.old_keys.items()}}


@dataclass
class TaskSettings:
    """What every downstream task shares: the schedule, the batch mix, evaluation and the generators."""

    resolution: Any = setting(None, flag="--resolution",  # null keeps the data's own size
                              help="train/test resolution, N or HxW (height x width)")
    model: str = setting("resnet34", flag="--model")  # each task command gives the flag's help
    weights: str | None = setting(None, flag="--weights",
                                  help="pretrained weights: a local file, or 'pretrained' for the library's local "
                                       "cache (timm / smp; never downloaded). Default: random init")
    steps: int = setting(1000, check=positive_int, flag="--steps",  # fixed schedule
                         help="optimiser steps per arm (the same for every arm)")
    batch_size: int = setting(32, check=positive_int, flag="--batch-size", help="images per step, real + synthetic")
    lr: float = setting(1e-3, check=positive_float, flag="--lr",
                        help="peak learning rate (AdamW, warm-up then cosine to zero)")
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    synthetic_ratio: float = setting(0.5, check=fraction, flag="--synthetic-ratio",
                                     help="R: the fraction of each batch that is fresh synthetic samples, "
                                          "round(R * batch) of them (preset default 0.5)")
    real_sampling: str = "balanced"
    augment_real: bool = False  # flips, turns and colour jitter on the real images of every arm
    eval_batch_size: int = setting(64, check=positive_int)
    log_every: int = setting(10, check=positive_int)
    grid_every: int = setting(250, check=positive_int)
    save_models: bool = True
    cpu_threads: int | None = setting(None, check=positive_int, flag="--threads",
                                      help="CPU threads for torch (default: the preset's cpu_threads, else torch's)")
    bootstrap_resamples: int = setting(1000, check=positive_int)  # paired bootstrap intervals against real-only
    generators: dict = field(default_factory=dict)  # options per --aug name (each generator's spec lists its keys)
    steer_temperature: float = setting(0.5, check=positive_float, flag="--steer-temperature", metavar="T",
                                       help="--steer types: softmax temperature over the types' running losses "
                                            "(lower: more samples to the hardest type; default 0.5)")
    steer_floor: float = setting(0.3, check=fraction, flag="--steer-floor", metavar="F",
                                 help="--steer types: the share of synthetic samples spread evenly over the types, "
                                      "so none starves (default 0.3)")
    steer_candidates: int = setting(2, check=positive_int, flag="--steer-candidates", metavar="K",
                                    help="--steer hard: samples drawn per kept one; the model keeps the hardest "
                                         "(default 2; 1 is the unsteered draw)")
    steer_momentum: float = setting(0.9, check=fraction)  # of the running losses, per training step

    def generator_options(self, name: str) -> dict:
        """The options of generator `name` (preset and flags), without the unset ones."""
        return {k: v for k, v in ((self.generators or {}).get(name) or {}).items() if v is not None}


@dataclass
class ClassifySettings(TaskSettings):
    with_good: bool = setting(False, flag="--with-good",
                              help="add a 'good' class (train/good to train, test/good to test); adds defect-vs-good "
                                   "AP/AUROC")


@dataclass
class SegmentSettings(TaskSettings):
    model: str = "unet"
    eval_batch_size: int = 32
    smooth_sigma: float = 4.0  # Gaussian sigma of the map before its maximum becomes the image score
    loss: dict = field(default_factory=lambda: {"bce_weight": 1.0, "dice_weight": 1.0})
    models: dict = setting(factory=dict, flag="--encoder", apply=model_key("encoder"),  # widths per segmenter name
                           help="smp encoder for unet/deeplabv3 (preset: resnet18)")  # (and `encoder`, `lr`)

    def model_config(self) -> dict:
        return dict(self.models.get(self.model) or {})


@dataclass
class DetectSettings(TaskSettings):
    model: str = "fcos"
    eval_batch_size: int = 32
    # image-level defect recall is read where this share of test/good images is flagged
    recall_fpr: float = setting(0.05, check=open_fraction)
    box_join: int = setting(0, check=whole_number, flag="--box-join", metavar="R",
                            help="pieces of a defect mask at most 2R pixels apart share one box, in training and in "
                                 "the test truth (default 0: one box per 8-connected component). Thin cracks shrunk "
                                 "to the working resolution break into pieces; R = 1 joins them")
    # backbone, pyramid and head per detector name (and an `lr` override)
    models: dict = setting(factory=dict, flag="--encoder", apply=model_key("encoder"),
                           help="timm backbone of the detector (preset: resnet18)")

    def model_config(self) -> dict:
        return dict(self.models.get(self.model) or {})


def checked(settings_class: type, name: str, value: Any, subject: str) -> Any:
    """`value` for field `name` through its declared Check (None passes where the default is None); refused: one
    InputError "<subject> must be ..."."""
    check = declarations(settings_class)[name].check
    if check is None or (value is None and settings_class.__dataclass_fields__[name].default is None):
        return value
    try:
        return check(value)
    except Invalid as err:
        raise InputError(f"{subject} {err}") from None


def check_generator_options(generators: dict) -> None:
    """Every generator named under `generators` exists and is given only the options its spec declares (an option
    whose type is a Check is checked here too)."""
    if not isinstance(generators, dict):
        raise InputError(f"generators must be a mapping of generator name to options (got {generators!r})")
    for name, options in generators.items():
        spec = get_spec(name)
        if options is None:
            continue
        if not isinstance(options, dict):
            raise InputError(f"generators.{name} must be a mapping of options (got {options!r})")
        known = {option.key for option in spec.options}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"generators.{name}: unknown option(s) {', '.join(unknown)} (known: "
                             f"{', '.join(sorted(known)) or 'none'})")
        for option in spec.options:
            if isinstance(option.type, Check) and options.get(option.key) is not None:
                try:
                    option.type(options[option.key])
                except Invalid as err:
                    raise InputError(f"generators.{name}.{option.key} {err}") from None
        if spec.check_options:
            spec.check_options({k: v for k, v in options.items() if v is not None})


def settings_from_preset(settings_class: type, config: dict, where: str) -> TaskSettings:
    """The dataclass filled from a preset mapping; an unknown or renamed key, or a value its Check refuses, is one
    clear error naming the key and `where`."""
    config = {k: v for k, v in config.items() if k not in ("run", "name")}
    for old, new in renamed_keys().items():
        if old in config:
            raise InputError(f"{where}: '{old}' is now '{new}' (the same key in every task preset)")
    known = {f.name for f in dataclasses.fields(settings_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}")
    config = {key: checked(settings_class, key, value, f"{where}: {key}") for key, value in config.items()}
    try:
        return settings_class(**config)
    except TypeError as err:
        raise InputError(f"{where}: {err}") from None


def resolve_settings(settings_class: type, task: str, preset: str, args) -> TaskSettings:
    """Preset -> dataclass -> the flags the user gave (None, or False for a switch, means not given)."""
    config, path = read_preset(preset, task)
    settings = settings_from_preset(settings_class, config, str(path))
    for name, declared in declarations(settings_class).items():
        value = getattr(args, declared.dest, None) if declared.flag else None
        if value is None or value is False:  # `is`: 0 is a value (--box-join 0)
            continue
        value = checked(settings_class, name, value, declared.flag)  # argparse checked it; a hand-made namespace
        if declared.apply:
            declared.apply(settings, value)
        else:
            setattr(settings, name, value)
    generators = {name: dict(options or {}) for name, options in (settings.generators or {}).items()}
    for spec in specs():  # a flag given overrides the preset's generators.<name>.<key>
        given = spec.flag_values(args, task)
        if given:
            generators[spec.name] = {**generators.get(spec.name, {}), **given}
    settings.generators = generators
    check_generator_options(settings.generators)
    return settings


def write_config(settings: TaskSettings, path: Path, run: dict) -> Path:
    """OUT/config.yaml: the resolved settings (a preset) plus a `run:` record of what was run."""
    record = {**dataclasses.asdict(settings), "run": run}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    return path
