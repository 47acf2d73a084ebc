"""Finished arms kept on disk, so a run can be resumed or split over processes without training anything twice.

Every arm that finishes writes OUT/P<k>/<arm>/finished.pt: its test-set evaluation (the metrics and the raw
outputs the paired tests compare), its run record and the real images it trained on, stamped with what decides
its numbers (its model and schedule, the data's content, the partition's split, the seed, its own generators'
settings). With `--resume` the runner reads an arm back instead of training it when the stamp matches, and stops
with the differences, before writing anything, when it does not.

Each arm seeds itself, so an arm's numbers do not depend on which arms ran before it in the same process: a long
run killed after P2 resumes at P3, and two commands with other `--aug` or `--partitions` into one `--out` (one per
core) followed by the full command with `--resume` give the table the full command would have given.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generators.registry import REAL_ONLY, get_spec, specs
from inspect_train.arms import parse_arm
from inspect_train.checkpoint import NUMPY_ARRAYS, RefusedFile, load_weights_only, save_checkpoint
from inspect_train.errors import InputError

FINISHED = "finished.pt"
# Flags that choose which arms run, where and how fast, not what any arm's numbers are (the data is stamped by its
# content, not its path). Each generator's own flags
# are in the settings' generators section, which an arm's stamp narrows to the generators that arm draws from.
_NOT_STAMPED = {"aug", "no_baseline", "partitions", "out", "quiet", "threads", "device", "resume", "func", "config",
                "manifest", "command", "open_set", "unknown", "generators", "data"}


def run_stamp(task: str, settings, args, data_digest: str, category: str, size, manifest: dict) -> dict:
    """What the arms' numbers depend on, as plain JSON values (narrowed per arm by `arm_stamp`). The data is
    named by its content (`data.fingerprint`), so a copied run folder or a moved data set still resumes."""
    values = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("progress", "cpu_threads")}
    generator_flags = {option.dest for spec in specs() for option in spec.options if option.flag}
    flags = {k: v for k, v in vars(args).items()
             if k not in _NOT_STAMPED and k not in generator_flags and not callable(v)}
    stamp = {"task": task, "settings": values, "flags": flags, "data": data_digest, "category": category,
             "resolution": list(size), "split_seed": manifest.get("seed"),
             "splits": {str(p["partition"]): p["defects"] for p in manifest.get("partitions", [])}}
    return json.loads(json.dumps(stamp, default=str, sort_keys=True))


def arm_stamp(stamp: dict, arm: str, partition: int, held_out: str | None) -> dict:
    """The run stamp narrowed to one arm: its partition's split only, and the options of the generators it draws
    from only (the real-only arm draws from none; another arm's generator settings do not change this one), and
    the steering settings only where the arm is steered."""
    narrowed = {k: v for k, v in stamp.items() if k != "splits"}
    narrowed["split"] = stamp.get("splits", {}).get(str(partition))
    narrowed["held_out"] = held_out
    generators = dict(stamp["settings"].get("generators") or {})
    plan = parse_arm(arm, REAL_ONLY)
    own = [need for name in plan.generators for need in (name, *get_spec(name).needed(generators.get(name) or {}))]
    settings = {k: v for k, v in stamp["settings"].items() if plan.steer != "off" or not k.startswith("steer_")}
    narrowed["settings"] = {**settings, "generators": {name: generators[name] for name in dict.fromkeys(own)
                                                       if generators.get(name)}}
    return narrowed


def arm_folder(out: Path, partition: int, arm: str, held_out: str | None) -> Path:
    """OUT/P<k>/<arm>[/unknown-<type>]: where an arm's model, logs and finished evaluation live."""
    return Path(out, f"P{partition}", arm, *([f"unknown-{held_out}"] if held_out else []))


def save_finished(folder: Path, stamp: dict, evaluation, run: dict, served: set) -> Path:
    return save_checkpoint({"stamp": stamp, "metrics": evaluation.metrics, "outputs": evaluation.outputs,
                            "unknown_scores": evaluation.unknown_scores, "run": run,
                            "served_real": sorted(list(item) for item in served)}, folder / FINISHED)


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_short(a)} there, {_short(b)} now")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def read_finished(folder: Path, stamp: dict, label: str, allowed: tuple = ()) -> dict | None:
    """The arm finished earlier in `folder` with this stamp, or None when it never finished there. It is read
    with the weights-only unpickler: tensors, plain values, numpy arrays and the task's `allowed` output types.

    A finished arm with another stamp is an error: reading it would mix two configurations in one table, and
    training over it would silently replace a result."""
    path = folder / FINISHED
    if not path.is_file():
        return None
    try:
        saved = load_weights_only(path, "finished arm", allowed=(*NUMPY_ARRAYS, *allowed))
    except RefusedFile:
        raise
    except InputError:  # a file cut short by a killed run: train the arm again
        print(f"{label}: {path} cannot be read; training it again")
        return None
    if not isinstance(saved, dict) or not isinstance(saved.get("stamp"), dict):
        raise InputError(f"--resume: {path} is not a finished arm of this project; use another --out, or delete it "
                         "to train the arm again")
    differences = _differences(saved.get("stamp", {}), stamp)
    if differences:
        shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")
        raise InputError(f"--resume: {label} in {folder} was trained with other settings ({shown}). "
                         f"Use another --out, or delete {path} to train it again")
    return saved


@dataclass
class FinishedArms:
    """The runner's handle on finished arms: always saves them; with --resume, `check` reads every finished arm
    of the run before anything is written (a refused resume leaves the folder as it was) and `read` hands them
    back instead of training them again."""

    stamp: dict
    resume: bool = False
    allowed: tuple = ()  # the task's own types in its evaluation outputs (a detector's Detections)
    checked: dict = field(default_factory=dict)

    def check(self, out: Path, partitions: list[int], arms: list[str], held_out_types: list[str] | None) -> int:
        """Read every finished arm this run would read back; returns how many there are."""
        if not self.resume:
            return 0
        for partition in partitions:
            for held_out in (held_out_types or [None]):
                for arm in arms:
                    folder = arm_folder(out, partition, arm, held_out)
                    label = f"P{partition} {arm}" + (f" (unknown {held_out})" if held_out else "")
                    self.checked[folder] = read_finished(folder, arm_stamp(self.stamp, arm, partition, held_out),
                                                         label, self.allowed)
        return sum(saved is not None for saved in self.checked.values())

    def read(self, folder: Path, arm: str, partition: int, held_out: str | None, label: str) -> dict | None:
        if not self.resume:
            return None
        if folder in self.checked:
            return self.checked.pop(folder)
        return read_finished(folder, arm_stamp(self.stamp, arm, partition, held_out), label, self.allowed)

    def save(self, folder: Path, arm: str, partition: int, held_out: str | None, evaluation, run: dict,
             served: set) -> Path:
        return save_finished(folder, arm_stamp(self.stamp, arm, partition, held_out), evaluation, run, served)
