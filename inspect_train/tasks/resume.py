"""Finished arms kept on disk, so a run can be resumed or split over processes without training anything twice.

Every arm that finishes writes OUT/P<k>/<arm>/finished.pt: its test-set evaluation (the metrics and the raw
outputs the paired tests compare), its run record and the real images it trained on, stamped with what decides
its numbers (the settings, the data, the partition's split, the seed, the generators). With `--resume` the runner
reads an arm back instead of training it when the stamp matches, and stops with the differences when it does not.

Each arm seeds itself, so an arm's numbers do not depend on which arms ran before it in the same process: a long
run killed after P2 resumes at P3, and two commands with other `--aug` or `--partitions` into one `--out` (one per
core) followed by the full command with `--resume` give the table the full command would have given.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspect_train.checkpoint import NUMPY_ARRAYS, RefusedFile, load_weights_only, save_checkpoint
from inspect_train.errors import InputError

FINISHED = "finished.pt"
# Flags that choose which arms run, where and how fast, not what any arm's numbers are.
_NOT_STAMPED = {"aug", "no_baseline", "partitions", "out", "quiet", "threads", "device", "resume", "func", "config",
                "manifest", "command", "open_set", "unknown"}


def run_stamp(settings, args, data_root: Path, category: str, size, manifest: dict) -> dict:
    """What an arm's numbers depend on, as plain JSON values (compared key by key on resume)."""
    values = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("progress", "cpu_threads")}
    flags = {k: v for k, v in vars(args).items() if k not in _NOT_STAMPED and not callable(v)}
    stamp = {"settings": values, "flags": flags, "data": str(Path(data_root).resolve()), "category": category,
             "resolution": list(size), "split_seed": manifest.get("seed"),
             "splits": {str(p["partition"]): p["defects"] for p in manifest.get("partitions", [])}}
    return json.loads(json.dumps(stamp, default=str, sort_keys=True))


def partition_stamp(stamp: dict, partition: int, held_out: str | None) -> dict:
    """The run stamp narrowed to one partition's split (the other partitions' splits do not change this arm)."""
    narrowed = {k: v for k, v in stamp.items() if k != "splits"}
    narrowed["split"] = stamp.get("splits", {}).get(str(partition))
    narrowed["held_out"] = held_out
    return narrowed


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
    differences = _differences(saved.get("stamp", {}), stamp)
    if differences:
        shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")
        raise InputError(f"--resume: {label} in {folder} was trained with other settings ({shown}). "
                         f"Use another --out, or delete {path} to train it again")
    return saved


@dataclass
class FinishedArms:
    """The runner's handle on finished arms: always saves them; reads them back only with --resume."""

    stamp: dict
    resume: bool = False
    allowed: tuple = ()  # the task's own types in its evaluation outputs (a detector's Detections)

    def read(self, folder: Path, partition: int, held_out: str | None, label: str) -> dict | None:
        if not self.resume:
            return None
        return read_finished(folder, partition_stamp(self.stamp, partition, held_out), label, self.allowed)

    def save(self, folder: Path, partition: int, held_out: str | None, evaluation, run: dict, served: set) -> Path:
        return save_finished(folder, partition_stamp(self.stamp, partition, held_out), evaluation, run, served)
