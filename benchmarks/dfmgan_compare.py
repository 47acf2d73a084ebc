"""Tabulate dfmgan_learning.py reports side by side: one row per (variant, defect type, seed), the last
evaluation's KID and mask statistics, then each variant's mean over seeds, as markdown for docs/dfmgan.md.

    python3 benchmarks/dfmgan_compare.py before=/work/bench/before_aitex_s0/report.json \\
        before=/work/bench/before_aitex_s1/report.json after=/work/bench/after_aitex_s0/report.json ...
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

COLUMNS = [("KIDx1e3", "KID x1e3", None), ("mask_distance", "mask distance", None),
           ("area_median", "area", "generated"), ("border_fraction", "border", "generated"),
           ("elongation_median", "elongation", "generated"), ("orientation_abs_median_deg", "|angle|", "generated"),
           ("empty_fraction", "empty", "generated")]


def last_rows(report: dict) -> list[tuple[str, dict]]:
    """(defect type, final stage-2 evaluation) for each defect type of a report."""
    return [(defect, entry["curve"][-1]) for defect, entry in report["stage2"].items()]


def value(row: dict, key: str, side: str | None):
    return (row.get(side) or {}).get(key) if side else row.get(key)


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    rows, reals, stage1 = [], {}, []
    for arg in argv:
        variant, _, path = arg.partition("=")
        if not Path(path).is_file():
            print(f"{arg}: no report at {path or '(empty path)'}; give VARIANT=path/to/report.json", file=sys.stderr)
            return 2
        report = json.loads(Path(path).read_text())
        if report.get("stage1"):
            stage1.append((variant, report["category"], report["seed"], report["stage1"][-1]))
        for defect, row in last_rows(report):
            rows.append((variant, defect, report["seed"], row))
            reals[defect] = row["real"]
    head = "| variant | defect | seed | " + " | ".join(name for _, name, _ in COLUMNS) + " |"
    print(head + "\n" + "|---" * (3 + len(COLUMNS)) + "|")
    for defect, real in sorted(reals.items()):
        print(f"| real | {defect} | - | - | - | " + " | ".join(fmt(real.get(k)) for k, _, s in COLUMNS if s) + " |")
    means = defaultdict(list)
    for variant, defect, seed, row in sorted(rows, key=lambda r: (r[1], r[0], r[2])):
        print(f"| {variant} | {defect} | {seed} | " + " | ".join(fmt(value(row, k, s)) for k, _, s in COLUMNS) + " |")
        means[(variant, defect)].append(row)
    print("\nmean over seeds:\n")
    print(head.replace(" seed |", " seeds |") + "\n" + "|---" * (3 + len(COLUMNS)) + "|")
    for (variant, defect), group in sorted(means.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = []
        for key, _, side in COLUMNS:
            values = [value(r, key, side) for r in group if value(r, key, side) is not None]
            cells.append(fmt(sum(values) / len(values)) if values else "-")
        print(f"| {variant} | {defect} | {len(group)} | " + " | ".join(cells) + " |")
    if stage1:
        print("\nstage 1, last evaluation:\n\n| variant | category | seed | step | FD | KID x1e3 |\n|---|---|---|---|---|---|")
        for variant, category, seed, row in sorted(stage1, key=lambda r: (r[1], r[0], r[2])):
            print(f"| {variant} | {category} | {seed} | {row['step']} | {row['FD']} | {row['KIDx1e3']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
