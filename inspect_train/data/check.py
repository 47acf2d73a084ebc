"""`data check`: read and validate every file of a category and summarise it as a table.

Sizes, channels and mask coverage are measured on the files as they are on
disk; with a resolution, the category is also loaded at that size (the way
training loads it) and the coverage after resizing is shown too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from inspect_train.data.images import check_mask, read_image_array, read_mask_array
from inspect_train.data.mvtec import CategoryIndex
from inspect_train.progress import progress_bar


@dataclass
class SplitSummary:
    split: str
    sizes: list[tuple[int, int]] = field(default_factory=list)
    channels: set[int] = field(default_factory=set)
    coverage: list[float] = field(default_factory=list)
    resized_coverage: list[float] = field(default_factory=list)


def summarise(index: CategoryIndex, progress: bool = True) -> list[SplitSummary]:
    """Read every image (and mask) once; raises InputError on the first bad file."""
    jobs: list[tuple[str, Path, Path | None]] = [("train/good", p, None) for p in index.train_good]
    jobs += [("test/good", p, None) for p in index.test_good]
    for defect in index.defect_types:
        jobs += [(f"test/{defect}", item.image, item.mask) for item in index.defects[defect]]
    rows: dict[str, SplitSummary] = {}
    for split, image_path, mask_path in progress_bar(jobs, desc="checking", unit="img", disable=None if progress else True, leave=False):
        row = rows.setdefault(split, SplitSummary(split))
        image = read_image_array(image_path)
        row.sizes.append(image.shape[:2])
        row.channels.add(image.shape[2])
        if mask_path is not None:
            mask = read_mask_array(mask_path)
            check_mask(image_path, mask_path, image, mask)
            row.coverage.append(float(mask.mean()) * 100)
    return list(rows.values())


def _sizes(sizes: list[tuple[int, int]]) -> str:
    unique = sorted(set(sizes))
    if not unique:
        return "-"
    if len(unique) == 1:
        h, w = unique[0]
        return f"{w}x{h}"
    hs, ws = [h for h, _ in unique], [w for _, w in unique]
    return f"{min(ws)}-{max(ws)} x {min(hs)}-{max(hs)} ({len(unique)} sizes)"


def _coverage(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{sum(values) / len(values):.2f}% ({min(values):.2f}-{max(values):.2f}%)"


def format_table(rows: list[SplitSummary]) -> str:
    resized = any(r.resized_coverage for r in rows)
    header = ["split", "images", "size (WxH)", "channels", "mask coverage: mean (min-max)"]
    if resized:
        header.append("after resize")
    cells = [header]
    for r in rows:
        line = [r.split, str(len(r.sizes)), _sizes(r.sizes), "/".join(str(c) for c in sorted(r.channels)) or "-", _coverage(r.coverage)]
        if resized:
            line.append(_coverage(r.resized_coverage))
        cells.append(line)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
