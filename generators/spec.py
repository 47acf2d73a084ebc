"""What a generator kind declares once, in its own package, so that no command has to name it.

A `GeneratorSpec` is its `--aug` name, its options (each with the preset key under `generators.<name>` and,
where users set it per run, the command-line flag), how one partition's generator is built, and, for a learned
generator (`Learned`), how it is trained when missing, where its checkpoints live under `--generators`, how a
checkpoint is read back as a generator and which `gan` subcommands train it by hand. The protocol runner, the
generator cache, the settings, `gan`, `generate` and `evaluate-gen` read these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from inspect_train.errors import InputError

if TYPE_CHECKING:
    import torch

    from inspect_train.data.category import CategoryData

TASK_COMMANDS = ("classify", "segment", "detect")


@dataclass(frozen=True)
class Option:
    """One setting of a generator: `key` under `generators.<name>` in a preset and config.yaml; `flag`, when
    set, is the command-line flag that overrides it, taken by every command named in `commands` (the task
    commands by default) with the same meaning in each. `type` is the flag's argparse type; a validator of
    inspect_train.validators (positive_int, fraction, ...) also checks the preset's value."""

    key: str
    flag: str | None = None
    type: Callable[[str], Any] = str
    choices: tuple | None = None
    help: str = ""
    metavar: str | None = None
    commands: tuple[str, ...] = TASK_COMMANDS

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_") if self.flag else self.key


@dataclass
class BuildRequest:
    """What building one partition's generator is handed: the category at the task's size (train/good and the
    defect images; only `base_names` of them may reach the generator), the generator's options, and for a
    learned generator its checkpoints for this base set (`checkpoints(name)`: trained when missing; another
    learned generator's by its name, e.g. a painter whose masks come from DFMGAN) with the data at that
    generator's own size (`data_for(name)`)."""

    data: "CategoryData"
    base_names: dict[str, list[str]]
    device: "torch.device | str"
    options: dict
    paired_good: bool = True  # the task trains on the paired defect-free images (DRAEM); a generator may skip them
    checkpoints: Callable[[str], dict[str, Path]] | None = None
    data_for: Callable[[str], "CategoryData"] | None = None

    def base_sets(self, data: "CategoryData | None" = None) -> dict:
        """The ImageSets of each defect type restricted to the partition's base names, from `data` (default: the
        task's; a learned generator passes its own-size data)."""
        data = data if data is not None else self.data
        unknown = sorted(set(self.base_names) - set(data.defects))
        if unknown:
            raise InputError(f"defect type(s) {unknown} are not in the data ({data.defect_types})")
        return {t: data.defects[t].select(names) for t, names in self.base_names.items()}


@dataclass
class Plan:
    """How a learned generator trains for one run: its resolved config (the YAML preset as a mapping, with
    `name`), the (H, W) it trains at (the category is loaded at that size for it), what a cached checkpoint
    must have been trained with to be reused (`trained_with`, recorded in the index), the step counts and
    options its `train` reads (`settings`), and a note for the console."""

    config: dict
    size: tuple[int, int]
    index_resolution: Any
    trained_with: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class TrainJob:
    """One defect type's training, handed to `Learned.train` by the cache: the base images of one partition
    (and train/good in `data`), where to write, and whether a stopped run's checkpoint is continued."""

    cache: Any  # the inspect_train.tasks.generators.GeneratorCache running it (folder, plan, device, dist, say)
    partition: int
    defect: str
    names: list[str]
    out: Path
    resume: bool
    extra: dict


@dataclass(frozen=True)
class Learned:
    """A generator trained when missing, one checkpoint per partition and defect type.

    kind: the `kind` its checkpoint files carry (how `generate` and `evaluate-gen` tell whose a file is);
    folder: its folder under `--generators` ("" for the folder itself); noun: what the console calls its
    generators ("toy painters"); title: the console's prefix for its training ("toy stage 2"), and
    item(partition, defect) the name of one ("P1 'crack'"); plan(data, options, device) -> Plan;
    checkpoint_file(defect) -> the file name `train` writes in TrainJob.out; train(job) -> that checkpoint;
    load(checkpoints {defect: path}, data, base_names, device, options) -> a DefectGenerator (for `generate`
    and `evaluate-gen`; `data` is at `size_of`'s size, restricted to train/good and the base images);
    size_of(checkpoint state) -> its (H, W); keys: what every complete checkpoint of it holds (a file without
    them is refused in one line before `load` or `size_of` read it); needs_goods: `generate` must be given
    --data/--category (it paints on real train/good images); add_commands(gan subparsers): its `gan fit-...`
    commands."""

    kind: str
    folder: str
    noun: str
    title: str
    plan: Callable[..., Plan]
    checkpoint_file: Callable[[str], str]
    train: Callable[[TrainJob], Path]
    load: Callable[..., Any]
    size_of: Callable[[dict], tuple[int, int]]
    keys: tuple[str, ...] = ("defect_type",)
    needs_goods: bool = False
    add_commands: Callable[[Any], None] | None = None
    item: Callable[[int, str], str] = lambda partition, defect: f"P{partition} '{defect}'"


@dataclass(frozen=True)
class GeneratorSpec:
    """One generator kind. `build(request)` -> the DefectGenerator for one partition's base set. `requires(options)`
    names the learned generators whose checkpoints `build` asks for (its own, when learned, is implied);
    `check_options(options)` refuses bad values before any arm trains; `old_keys` names the preset keys its options
    had before they moved under `generators.<name>`, so an old preset is refused with the new name."""

    name: str
    summary: str
    build: Callable[[BuildRequest], Any]
    options: tuple[Option, ...] = ()
    learned: Learned | None = None
    requires: Callable[[dict], tuple[str, ...]] = lambda options: ()
    check_options: Callable[[dict], None] | None = None
    old_keys: dict[str, str] = field(default_factory=dict)  # a task preset's former top-level key -> option key

    def flag_values(self, args, command: str) -> dict:
        """{option key: value} of this generator's flags that `command`'s parsed `args` were given."""
        return {o.key: getattr(args, o.dest) for o in self.options
                if o.flag and command in o.commands and getattr(args, o.dest, None) is not None}

    def needed(self, options: dict) -> tuple[str, ...]:
        """The learned generators an arm of this kind trains or reuses, itself first."""
        own = (self.name,) if self.learned else ()
        return tuple(dict.fromkeys(own + tuple(self.requires(options))))
