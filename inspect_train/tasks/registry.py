"""Every training task by name, so that the command line, predict and export never list or branch on tasks.

A task registers one `TaskEntry`: its subcommand (help, description, flags) and its task object. The object
implements the runner's `Task` protocol (inspect_train.tasks.runner) and `ShippedTask` below, which is all
`predict`, `export` and a model file's rebuild ask of it. The entry is light on purpose: it can name its task
object as "module:attribute", imported only when a command runs or a model file is read, so that
`inspect-train --help` reads every task's flags without importing torch.

The built-in tasks register from their command modules (BUILTIN_MODULES), read on the first lookup; a plugin
or a test registers its own with `register_task(TaskEntry(...))` and takes it back with `unregister_task`.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from inspect_train.errors import InputError

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from torch import nn

    from inspect_train.tasks.prediction import Prediction

BUILTIN_MODULES = ("inspect_train.commands.classify", "inspect_train.commands.segment",
                   "inspect_train.commands.detect")


class ShippedTask(Protocol):
    """What a task adds to the runner's protocol for its trained models to be rebuilt, run and exported."""

    name: str
    output_name: str  # the exported graph's output, e.g. probabilities
    output_description: str  # that output as a deployment reads it, stored in the exported file
    export_refusals: dict[str, str]  # format -> why this task's models cannot be written in it

    def build_from_architecture(self, record: dict) -> nn.Module: ...  # random weights, for a state dict to fill
    def predictor(self, meta: dict, threshold: float | None) -> Prediction: ...  # one predict run
    def export_graph(self, model: nn.Module) -> nn.Module: ...  # what the exported file computes
    def compile_torchscript(self, graph: nn.Module, example, meta: dict): ...  # traced or scripted
    def check_export(self, model: nn.Module, graph: nn.Module, path: Path, fmt: str, images) -> None: ...


@dataclass(frozen=True)
class TaskEntry:
    """One task's subcommand and where its task object lives (the object, or "module:attribute")."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]  # the subcommand's flags
    task: Any

    @functools.cached_property
    def loaded(self):
        """The task object, imported on first use; its name must be the entry's."""
        task = self.task
        if isinstance(task, str):
            module, _, attribute = task.partition(":")
            task = getattr(importlib.import_module(module), attribute)
        if task.name != self.name:
            raise ValueError(f"task entry '{self.name}' names a task object called '{task.name}'")
        return task


class UnknownTask(InputError):
    """A task name no entry has registered."""


_ENTRIES: dict[str, TaskEntry] = {}


@functools.cache
def _read_builtin() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def register_task(entry: TaskEntry) -> TaskEntry:
    """Add a task; a name already taken is refused (unregister it first to replace it)."""
    if entry.name in _ENTRIES:
        raise ValueError(f"a task called '{entry.name}' is already registered")
    _ENTRIES[entry.name] = entry
    return entry


def unregister_task(name: str) -> None:
    """Take a registered task back out (a test's own task, when the test ends)."""
    _ENTRIES.pop(name, None)


def task_entries() -> list[TaskEntry]:
    """Every registered task's entry, built-in ones first, in the order they registered."""
    _read_builtin()
    return list(_ENTRIES.values())


def task_names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(entry.name for entry in task_entries())


def get_task(name: str):
    """The task object registered as `name`; an unknown name is one line listing the known ones."""
    _read_builtin()
    entry = _ENTRIES.get(name)
    if entry is None:
        raise UnknownTask(f"unknown task '{name}' (known: {', '.join(task_names())})")
    return entry.loaded
