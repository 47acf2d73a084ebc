"""One settings flow for every task: preset (configs/<task>-*.yaml) -> dataclass -> command-line flags.

The resolved settings are written to `OUT/config.yaml` when a run starts; that file is itself a preset
(its `run:` section, which records what was run, is ignored when it is read back), so
`--config OUT/config.yaml` repeats a run's settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from generators.registry import get_spec, specs
from inspect_train.config_files import read_preset
from inspect_train.errors import InputError


def renamed_keys() -> dict[str, str]:
    """Former preset keys -> their names now (each generator's own are in its spec)."""
    return {"generator_options": "generators",
            **{old: f"generators.{spec.name}.{key}" for spec in specs() for old, key in spec.old_keys.items()}}


@dataclass
class TaskSettings:
    """What every downstream task shares: the schedule, the batch mix, evaluation and the generators."""

    resolution: Any = None  # N or "HxW"; null keeps the data's own size
    model: str = "resnet34"
    weights: str | None = None  # a local file, or "pretrained" for the library's local cache
    steps: int = 1000  # optimiser steps per arm, the same for every arm (fixed schedule)
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    synthetic_ratio: float = 0.5  # fraction of each batch drawn fresh from the generator
    real_sampling: str = "balanced"
    augment_real: bool = False  # flips, turns and colour jitter on the real images of every arm
    eval_batch_size: int = 64
    log_every: int = 10
    grid_every: int = 250
    save_models: bool = True
    cpu_threads: int | None = None
    bootstrap_resamples: int = 1000  # paired bootstrap intervals of each arm against real-only
    generators: dict = field(default_factory=dict)  # options per --aug name (each generator's spec lists its keys)

    def check(self) -> None:
        for key in ("steps", "batch_size", "eval_batch_size", "log_every", "grid_every", "bootstrap_resamples"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{key.replace('_', '-')} must be a positive integer (got {value})")
        if not 0.0 <= float(self.synthetic_ratio) <= 1.0:
            raise InputError(f"--synthetic-ratio must be between 0 and 1 (got {self.synthetic_ratio})")
        if float(self.lr) <= 0:
            raise InputError(f"--lr must be positive (got {self.lr})")
        if self.cpu_threads is not None and int(self.cpu_threads) < 1:
            raise InputError(f"--threads must be at least 1 (got {self.cpu_threads})")
        check_generator_options(self.generators)

    def generator_options(self, name: str) -> dict:
        """The options of generator `name` (preset and flags), without the unset ones."""
        return {k: v for k, v in ((self.generators or {}).get(name) or {}).items() if v is not None}


@dataclass
class ClassifySettings(TaskSettings):
    with_good: bool = False  # a `good` class: train/good joins training, test/good the test set


@dataclass
class SegmentSettings(TaskSettings):
    model: str = "unet"
    eval_batch_size: int = 32
    smooth_sigma: float = 4.0  # Gaussian sigma of the map before its maximum becomes the image score
    loss: dict = field(default_factory=lambda: {"bce_weight": 1.0, "dice_weight": 1.0})
    models: dict = field(default_factory=dict)  # widths per segmenter name (and `encoder`, `lr` overrides)

    def model_config(self) -> dict:
        return dict(self.models.get(self.model) or {})


@dataclass
class DetectSettings(TaskSettings):
    model: str = "fcos"
    eval_batch_size: int = 32
    recall_fpr: float = 0.05  # image-level defect recall is read where this share of test/good images is flagged
    box_join: int = 0  # pieces of a mask at most 2 * box_join pixels apart share one box (0: 8-connected components)
    models: dict = field(default_factory=dict)  # backbone, pyramid and head per detector name (and an `lr` override)

    def model_config(self) -> dict:
        return dict(self.models.get(self.model) or {})

    def check(self) -> None:
        super().check()
        if not 0.0 < float(self.recall_fpr) < 1.0:
            raise InputError(f"recall_fpr must be between 0 and 1 (got {self.recall_fpr})")
        if int(self.box_join) != self.box_join or self.box_join < 0:
            raise InputError(f"box_join must be 0 or a whole number of pixels (got {self.box_join})")


def check_generator_options(generators: dict) -> None:
    """Every generator named under `generators` exists and is given only the options its spec declares."""
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
        if spec.check_options:
            spec.check_options({k: v for k, v in options.items() if v is not None})


# flag dest -> settings field, for the flags every task command has (each generator's flags come from its spec)
FLAG_FIELDS = {"model": "model", "weights": "weights", "steps": "steps", "batch_size": "batch_size",
               "synthetic_ratio": "synthetic_ratio", "lr": "lr", "resolution": "resolution", "threads": "cpu_threads",
               "box_join": "box_join"}


def settings_from_preset(settings_class: type, config: dict, where: str) -> TaskSettings:
    """The dataclass filled from a preset mapping; an unknown or renamed key is one clear error."""
    config = {k: v for k, v in config.items() if k not in ("run", "name")}
    for old, new in renamed_keys().items():
        if old in config:
            raise InputError(f"{where}: '{old}' is now '{new}' (the same key in every task preset)")
    known = {f.name for f in dataclasses.fields(settings_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        return settings_class(**config)
    except TypeError as err:
        raise InputError(f"{where}: {err}") from None


def resolve_settings(settings_class: type, task: str, preset: str, args) -> TaskSettings:
    """Preset -> dataclass -> the flags the user gave (None means not given)."""
    config, path = read_preset(preset, task)
    settings = settings_from_preset(settings_class, config, str(path))
    for dest, name in FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            setattr(settings, name, value)
    if getattr(args, "with_good", False):
        settings.with_good = True
    generators = {name: dict(options or {}) for name, options in (settings.generators or {}).items()}
    for spec in specs():  # a flag given overrides the preset's generators.<name>.<key>
        given = spec.flag_values(args, task)
        if given:
            generators[spec.name] = {**generators.get(spec.name, {}), **given}
    settings.generators = generators
    encoder = getattr(args, "encoder", None)
    if encoder:
        settings.models = {**settings.models, settings.model: {**settings.model_config(), "encoder": encoder}}
    settings.check()
    return settings


def write_config(settings: TaskSettings, path: Path, run: dict) -> Path:
    """OUT/config.yaml: the resolved settings (a preset) plus a `run:` record of what was run."""
    record = {**dataclasses.asdict(settings), "run": run}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    return path
