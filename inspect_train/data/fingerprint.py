"""A category's identity by content, not by where it lies: a run folder or a data set copied to another machine
or path is still the same data, and one image changed in place is not."""

from __future__ import annotations

import hashlib
from pathlib import Path

from inspect_train.data.mvtec import CategoryIndex


def category_digest(index: CategoryIndex) -> str:
    """SHA-256 over every image and mask of the category, each named by its path inside the category folder."""
    files = [*index.train_good, *index.test_good]
    for items in index.defects.values():
        for item in items:
            files += [item.image, item.mask]
    folder = Path(index.folder)
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: Path(p).relative_to(folder).as_posix()):
        digest.update(Path(path).relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()
