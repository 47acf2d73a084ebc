"""The real side of `evaluate-gen`: one partition of a manifest, whose base sets are all a generator may have seen.

Only train/good and those base images are ever loaded (`base_only_data`); the test images are never read.
"""

from __future__ import annotations

from pathlib import Path

from inspect_train.atomic import write_json_atomic
from inspect_train.data.category import load_category
from inspect_train.data.mvtec import CategoryIndex
from inspect_train.errors import InputError
from inspect_train.protocol import get_partition, make_manifest, read_manifest


class Split:
    """The manifest and the partition whose base sets are the real side."""

    def __init__(self, args, index, out_dir: Path):
        if args.manifest:
            self.manifest, self.path, self.made = read_manifest(args.manifest, index), Path(args.manifest).resolve(), False
        else:
            self.manifest = make_manifest(index, partitions=args.partitions, seed=args.split_seed)
            self.path, self.made = (out_dir / "manifest.json").resolve(), True
        where = self.path if args.manifest else f"the split made like `data split` ({args.partitions} partitions, seed {args.split_seed})"
        try:
            part = get_partition(self.manifest, args.partition)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        self.partition = args.partition
        types = sorted(part["defects"])
        chosen = args.defect or types
        for defect in chosen:
            if defect not in index.defects:
                raise InputError(f"{index.folder / 'test'}: no defect type '{defect}' (have {', '.join(index.defect_types)})")
            if defect not in part["defects"]:
                raise InputError(f"{where}: partition {args.partition} has no defect type '{defect}' (has {', '.join(types)})")
        self.defects = list(dict.fromkeys(chosen))
        self.base = {d: list(part["defects"][d]["base"]) for d in self.defects}
        self.test = {d: list(part["defects"][d]["test"]) for d in self.defects}

    def save(self) -> None:
        if self.made:
            write_json_atomic(self.manifest, self.path)


def base_only_data(index, split: Split, size):
    """train/good and the partition's base defect images, nothing else: a restricted index is loaded, so the
    test images (test/good and every defect image outside the base sets) are never even read."""
    defects = {}
    for defect, names in split.base.items():
        by_name = index.defect_by_name(defect)
        defects[defect] = [by_name[n] for n in names]
    restricted = CategoryIndex(root=index.root, category=index.category, train_good=list(index.train_good),
                               test_good=[], defects=defects)
    return load_category(index.root, index.category, size=size, index=restricted)
