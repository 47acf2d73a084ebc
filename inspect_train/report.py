"""results.json and report.md, shared by every downstream task (classify, segment).

One writer and one reader so a person and a script read every task's results
the same way. Generic over metric names: the caller says which scalar metrics
to summarise (e.g. `accuracy`, or `pixel_ap`, `pixel_auroc`); any other keys a
partition's arm carries (per-class dicts, confusion matrices) are kept as-is.

Summary statistics: `mean` over partitions and `std` as the sample standard
deviation (n - 1; 0.0 when there is one partition), with `n` stated.
`difference[m]` is the mean over partitions of (augmented - baseline), only
over partitions that have both arms.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from inspect_train.errors import InputError
from inspect_train.protocol import read_json, write_json_atomic

ARMS = ("baseline", "augmented")
RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"


def _stats(values: list[float]) -> dict | None:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def summarise(partitions: list[dict], metrics: list[str]) -> dict:
    """Mean/std per arm and metric, and the mean (and std) of per-partition differences."""
    summary: dict[str, Any] = {}
    for arm in ARMS:
        arm_stats = {}
        for metric in metrics:
            stats = _stats([p[arm].get(metric) for p in partitions if p.get(arm)])
            if stats is not None:
                arm_stats[metric] = stats
        summary[arm] = arm_stats or None
    difference, difference_std = {}, {}
    for metric in metrics:
        diffs = [
            p["augmented"][metric] - p["baseline"][metric]
            for p in partitions
            if p.get("augmented") and p.get("baseline")
            and p["augmented"].get(metric) is not None and p["baseline"].get(metric) is not None
        ]
        stats = _stats(diffs)
        if stats is not None:
            difference[metric] = stats["mean"]
            difference_std[metric] = stats["std"]
    summary["difference"] = difference or None
    summary["difference_std"] = difference_std or None
    return summary


def write_results(
    out_dir: str | Path,
    task: str,
    aug: str,
    command: str,
    config: dict,
    manifest_path: str | Path | None,
    partitions: list[dict],
    metrics: list[str],
    extra: dict | None = None,
) -> dict:
    """Write `<out_dir>/results.json` and `<out_dir>/report.md`; return the results dict.

    partitions: [{"partition": k, "baseline": {metric: value, ...} | None, "augmented": {...} | None, ...}];
    extra keys (schedule, synthetic samples seen...) are stored at the top level.
    """
    if not metrics:
        raise ValueError("write_results needs at least one metric name to summarise")
    for part in partitions:
        if "partition" not in part:
            raise ValueError("every partition entry needs a 'partition' number")
    results = {
        "task": task,
        "aug": aug,
        "command": command,
        "config": config,
        "manifest": None if manifest_path is None else str(manifest_path),
        "metrics": list(metrics),
        **(extra or {}),
        "partitions": [{**p, "baseline": p.get("baseline"), "augmented": p.get("augmented")} for p in partitions],
        "summary": summarise(partitions, metrics),
    }
    out_dir = Path(out_dir)
    write_json_atomic(results, out_dir / RESULTS_NAME)
    write_report_md(results, out_dir / REPORT_NAME)
    return results


def read_results(path: str | Path) -> dict:
    """Read a results.json (or the folder holding one) and check its shape."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    results = read_json(path, "results file")
    if not isinstance(results, dict):
        raise InputError(f"{path}: results must be a JSON object")
    missing = [k for k in ("task", "aug", "partitions", "summary", "metrics") if k not in results]
    if missing:
        raise InputError(f"{path}: results lack {', '.join(missing)}")
    if not isinstance(results["partitions"], list) or not all(
        isinstance(p, dict) and "partition" in p for p in results["partitions"]
    ):
        raise InputError(f"{path}: 'partitions' must be a list of objects with a 'partition' number")
    return results


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    value = round(float(value), 3) + 0.0  # no "-0.000"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _fmt_stats(stats: dict | None, signed: bool = False) -> str:
    if not stats:
        return "-"
    if stats.get("n") == 1:
        return f"{_fmt(stats['mean'], signed)} (n = 1)"
    return f"{_fmt(stats['mean'], signed)} ± {_fmt(stats['std'])}"


def metric_table(results: dict, metric: str) -> list[str]:
    """Markdown rows: P1..Pn, then mean ± std; columns baseline / augmented / difference."""
    lines = [f"| {metric} | baseline | augmented ({results['aug']}) | difference |", "|---|---|---|---|"]
    for part in results["partitions"]:
        base = (part.get("baseline") or {}).get(metric)
        aug = (part.get("augmented") or {}).get(metric)
        diff = aug - base if base is not None and aug is not None else None
        lines.append(f"| P{part['partition']} | {_fmt(base)} | {_fmt(aug)} | {_fmt(diff, signed=True)} |")
    summary = results["summary"]
    base_stats = (summary.get("baseline") or {}).get(metric)
    aug_stats = (summary.get("augmented") or {}).get(metric)
    diff_mean = (summary.get("difference") or {}).get(metric)
    diff_std = (summary.get("difference_std") or {}).get(metric)
    n = (base_stats or aug_stats or {}).get("n")
    diff_stats = None if diff_mean is None else {"mean": diff_mean, "std": diff_std or 0.0, "n": n}
    lines.append(
        f"| mean ± std | {_fmt_stats(base_stats)} | {_fmt_stats(aug_stats)} | {_fmt_stats(diff_stats, signed=True)} |"
    )
    return lines


def _dict_metric_tables(results: dict) -> list[str]:
    """Per-partition tables for dict-valued metrics (e.g. per-class accuracy)."""
    lines: list[str] = []
    for part in results["partitions"]:
        arms = {arm: part.get(arm) or {} for arm in ARMS}
        keys = sorted({k for values in arms.values() for k, v in values.items() if isinstance(v, dict)})
        for key in keys:
            names = sorted({n for values in arms.values() for n in (values.get(key) or {})})
            lines += ["", f"**P{part['partition']} {key}**", "", "| | baseline | augmented |", "|---|---|---|"]
            for name in names:
                cells = []
                for arm in ARMS:
                    value = (arms[arm].get(key) or {}).get(name)
                    cells.append(_fmt(value) if isinstance(value, (int, float)) else "-")
                lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return lines


def write_report_md(results: dict, path: str | Path) -> Path:
    """A page a person reads: what ran, on which split and schedule, and the tables."""
    lines = [f"# {results['task']}: {results['aug']} vs real-only baseline", ""]
    if results.get("command"):
        lines += ["```", str(results["command"]), "```", ""]
    if results.get("manifest"):
        lines.append(f"- manifest: `{results['manifest']}`")
    schedule = results.get("schedule")
    if isinstance(schedule, dict):
        lines.append("- schedule: " + ", ".join(f"{k} = {v}" for k, v in schedule.items()))
    for part in results["partitions"]:
        notes = {k: v for k, v in part.items() if k not in ("partition", *ARMS) and not isinstance(v, (dict, list))}
        if notes:
            lines.append(f"- P{part['partition']}: " + ", ".join(f"{k} = {v}" for k, v in notes.items()))
    lines.append("- std is the sample standard deviation over partitions; difference = augmented - baseline")
    for metric in results["metrics"]:
        lines += ["", *metric_table(results, metric)]
    lines += _dict_metric_tables(results)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
