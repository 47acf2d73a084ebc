"""The few-shot protocol: per partition and defect type, a seeded third of the
images is the base set (all any generator or model may see), the rest is test.

The manifest is the record of that split; every run names the one it used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from inspect_train.atomic import write_json_atomic
from inspect_train.data.mvtec import CategoryIndex
from inspect_train.errors import InputError


def base_size(n_images: int) -> int:
    """A third, rounded, at least one, and always leaving at least one test image."""
    return min(max(1, round(n_images / 3)), n_images - 1)


def _split_names(names: list[str], n_base: int, rng: np.random.Generator, taken: list[frozenset]) -> list[str]:
    """Draw a base set that differs from earlier partitions' when there are enough distinct subsets."""
    distinct_possible = math.comb(len(names), n_base) > len(taken)
    for _ in range(1000):
        base = sorted(rng.choice(names, size=n_base, replace=False).tolist())
        if not distinct_possible or frozenset(base) not in taken:
            return base
    for combo in combinations(names, n_base):  # tiny sets: enumerate instead of drawing forever
        if frozenset(combo) not in taken:
            return sorted(combo)
    return base


def make_manifest(index: CategoryIndex, partitions: int = 3, seed: int = 0) -> dict:
    if partitions < 1:
        raise InputError(f"--partitions must be at least 1 (got {partitions})")
    rng = np.random.default_rng(seed)
    taken: dict[str, list[frozenset]] = {d: [] for d in index.defect_types}
    result = []
    for k in range(1, partitions + 1):
        defects = {}
        for defect in index.defect_types:
            names = sorted(item.name for item in index.defects[defect])
            base = _split_names(names, base_size(len(names)), rng, taken[defect])
            taken[defect].append(frozenset(base))
            defects[defect] = {"base": base, "test": [n for n in names if n not in set(base)]}
        result.append({"partition": k, "defects": defects})
    return {"category": index.category, "seed": seed, "partitions": result}


def read_json(path: Path, what: str):
    """A JSON file we wrote, or one line naming the file and what is wrong with it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a valid JSON {what} ({err})") from None


def read_manifest(path: str | Path, index: CategoryIndex | None = None) -> dict:
    """Read and check a manifest; with an index, check it names this category's files."""
    path = Path(path)
    manifest = read_json(path, "manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("partitions"), list):
        raise InputError(f"{path}: manifest has no 'partitions' list")
    for part in manifest["partitions"]:
        if not isinstance(part, dict) or "partition" not in part or not isinstance(part.get("defects"), dict):
            raise InputError(f"{path}: each partition needs 'partition' and 'defects'")
        for defect, split in part["defects"].items():
            base, test = split.get("base", []), split.get("test", [])
            if not base or not test:
                raise InputError(f"{path}: partition {part['partition']} defect '{defect}' needs base and test images")
            if set(base) & set(test):
                raise InputError(f"{path}: partition {part['partition']} defect '{defect}' has images in both base and test")
    if index is not None:
        if manifest.get("category") not in (None, index.category):
            raise InputError(f"{path}: manifest is for category '{manifest['category']}', not '{index.category}'")
        for part in manifest["partitions"]:
            for defect, split in part["defects"].items():
                if defect not in index.defects:
                    raise InputError(f"{path}: defect type '{defect}' is not in {index.folder / 'test'}")
                known = set(index.defect_by_name(defect))
                unknown = [n for n in split["base"] + split["test"] if n not in known]
                if unknown:
                    raise InputError(f"{path}: '{unknown[0]}' is not an image of test/{defect}")
    return manifest


def get_partition(manifest: dict, number: int) -> dict:
    for part in manifest["partitions"]:
        if int(part["partition"]) == int(number):
            return part
    available = [p["partition"] for p in manifest["partitions"]]
    raise InputError(f"partition {number} is not in the manifest (it has {available})")


@dataclass
class RunManifest:
    """The split a run or a generator training uses: read from --manifest, or made here (seeded) and kept in the
    output folder by `keep()` once every input is checked, so a refused command writes nothing."""

    manifest: dict
    path: Path
    made: bool

    def keep(self) -> Path:
        if self.made:
            write_json_atomic(self.manifest, self.path)
        return self.path


def manifest_for_run(index: CategoryIndex, manifest_path: str | None, out_dir: Path, partitions: int,
                     seed: int) -> RunManifest:
    """Use the given manifest, or make one the same way `data split` does, to keep with the run's outputs."""
    if manifest_path:
        return RunManifest(read_manifest(manifest_path, index), Path(manifest_path).resolve(), made=False)
    manifest = make_manifest(index, partitions=partitions, seed=seed)
    return RunManifest(manifest, (Path(out_dir) / "manifest.json").resolve(), made=True)
