"""results.json, report.md and summary.png, shared by every downstream task (classify, segment, detect).

One writer and one reader so a person and a script read every task's results the same way. A run has
arms (`none`, the real-only baseline, and one per generator); each partition holds every arm's metrics,
its training record and its paired tests against the baseline on the same test images.

An open-set run (`classify --open-set`) adds an `open_set` section (inspect_train.tasks.open_set): its
partitions' arms hold the mean over the held-out types, so the usual summary is the overall one.

Summary statistics: `mean` over partitions and `std` as the sample standard deviation (n - 1; 0.0 when there
is one partition), with `n` stated. `difference[arm][m]` is the mean and std over partitions of
(arm - baseline), only over partitions that have both.
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

from inspect_train.errors import InputError
from inspect_train.models.checkpoint import package_versions
from inspect_train.protocol import read_json, write_json_atomic
from inspect_train.report_chart import headline_chart

RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"
CHART_NAME = "summary.png"
SCHEMA = 2


def _stats(values: list) -> dict | None:
    values = [float(v) for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def summarise(partitions: list[dict], arms: list[str], metrics: list[str], baseline: str | None) -> dict:
    """Mean/std per arm and metric, and mean/std of the per-partition differences to the baseline."""
    per_arm: dict[str, dict] = {}
    difference: dict[str, dict] = {}
    for arm in arms:
        per_arm[arm] = {}
        for metric in metrics:
            stats = _stats([(p["arms"].get(arm) or {}).get(metric) for p in partitions])
            if stats is not None:
                per_arm[arm][metric] = stats
        if baseline is None or arm == baseline:
            continue
        difference[arm] = {}
        for metric in metrics:
            diffs = []
            for p in partitions:
                a, b = (p["arms"].get(arm) or {}).get(metric), (p["arms"].get(baseline) or {}).get(metric)
                if a is not None and b is not None:
                    diffs.append(a - b)
            stats = _stats(diffs)
            if stats is not None:
                difference[arm][metric] = stats
    return {"arms": per_arm, "difference": difference}


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, when it is one (else None)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def run_record(*, task: str, arms: list[str], baseline: str | None, metrics: list[str], headline: str,
               command: str, config: dict, manifest, schedule: dict, partitions: list[dict],
               started: float) -> dict:
    """The results dict of one run (without its summary, which write_results adds)."""
    finished = time.time()
    return {
        "schema": SCHEMA,
        "task": task,
        "arms": list(arms),
        "baseline": baseline,
        "metrics": list(metrics),
        "headline": headline,
        "command": command,
        "config": config,
        "manifest": None if manifest is None else str(manifest),
        "schedule": schedule,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)),
        "wall_seconds": round(finished - started, 1),
        "partitions": partitions,
    }


def write_results(out_dir: str | Path, results: dict) -> dict:
    """Add the summary; write results.json, report.md and the headline bar chart; return the results."""
    for part in results["partitions"]:
        if "partition" not in part or not isinstance(part.get("arms"), dict):
            raise ValueError("every partition entry needs a 'partition' number and an 'arms' mapping")
    results["summary"] = summarise(results["partitions"], results["arms"], results["metrics"], results["baseline"])
    out_dir = Path(out_dir)
    write_json_atomic(results, out_dir / RESULTS_NAME)
    chart = None
    try:
        chart = headline_chart(results, out_dir / CHART_NAME)
    except ValueError:
        chart = None  # nothing measured to draw (e.g. every value undefined)
    write_report_md(results, out_dir / REPORT_NAME, chart)
    return results


def read_results(path: str | Path) -> dict:
    """Read a results.json (or the folder holding one) and check its shape."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    results = read_json(path, "results file")
    if not isinstance(results, dict):
        raise InputError(f"{path}: results must be a JSON object")
    missing = [k for k in ("task", "arms", "partitions", "summary", "metrics") if k not in results]
    if missing:
        raise InputError(f"{path}: results lack {', '.join(missing)} (written by an older inspect-train?)")
    if not isinstance(results["partitions"], list) or not all(
        isinstance(p, dict) and "partition" in p and isinstance(p.get("arms"), dict) for p in results["partitions"]
    ):
        raise InputError(f"{path}: 'partitions' must be a list of objects with a 'partition' number and 'arms'")
    return results


# ----------------------------------------------------------------------------- report.md


def _fmt(value, signed: bool = False) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    value = round(float(value), 3) + 0.0  # no "-0.000"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def fmt_stats(stats: dict | None, signed: bool = False) -> str:
    if not stats:
        return "-"
    if stats.get("n") == 1:
        return f"{_fmt(stats['mean'], signed)} (n = 1)"
    return f"{_fmt(stats['mean'], signed)} ± {_fmt(stats['std'])}"


def metric_table(results: dict, metric: str) -> list[str]:
    """Markdown rows, one per arm: P1..Pn, mean ± std, and the difference to the baseline (mean ± std)."""
    parts = results["partitions"]
    head = [f"| {metric} |", *[f" P{p['partition']} |" for p in parts], " mean ± std |"]
    has_diff = bool(results["summary"].get("difference"))
    if has_diff:
        head.append(" difference ± std |")
    lines = ["".join(head), "|---" * (len(parts) + 2 + has_diff) + "|"]
    for arm in results["arms"]:
        cells = [f"| {arm} |"] + [f" {_fmt((p['arms'].get(arm) or {}).get(metric))} |" for p in parts]
        cells.append(f" {fmt_stats(results['summary']['arms'].get(arm, {}).get(metric))} |")
        if has_diff:
            diff = (results["summary"]["difference"].get(arm) or {}).get(metric)
            cells.append(f" {fmt_stats(diff, signed=True) if diff else '-'} |")
        lines.append("".join(cells))
    return lines


def _test_cell(test: dict) -> str:
    if test.get("test") == "mcnemar_exact":
        return f"p = {test['p_value']:.3g} ({test['arm_only']} vs {test['baseline_only']})"
    if test.get("test") == "paired_bootstrap":
        return f"{_fmt(test.get('difference'), True)} [{_fmt(test.get('low'), True)}, {_fmt(test.get('high'), True)}]"
    return "-"


def _paired_table(results: dict, intro: str, columns: list[str], rows: list[tuple]) -> list[str]:
    """A table of paired tests: each row's leading cells (partition first), then one test cell per metric any
    row has; the tests dict is each row's last item."""
    if not rows:
        return []
    metrics = [m for m in results["metrics"] if any(m in row[-1] for row in rows)]
    lines = ["", intro, "", "| " + " | ".join(columns + metrics) + " |", "|" + "---|" * (len(columns) + len(metrics))]
    for k, *names, tests in rows:
        lines.append(f"| P{k} | " + " | ".join([*names, *(_test_cell(tests.get(m, {})) for m in metrics)]) + " |")
    return lines


def tests_table(results: dict) -> list[str]:
    """Per partition and arm: each paired test against the baseline on the same test images."""
    rows = [(p["partition"], arm, tests) for p in results["partitions"] for arm, tests in (p.get("tests") or {}).items()]
    decisions = ("the image-level defect/good decisions at the fixed false-positive rate"
                 if results.get("task") == "detect" else "accuracy")
    intro = ("**Is it noise?** Each arm against the real-only baseline on the same test images: exact McNemar "
             f"test for {decisions} (p, then images only the arm got right vs only the baseline got right); paired "
             "bootstrap 95% interval of the difference for the others.")
    return _paired_table(results, intro, ["partition", "arm"], rows)


def pairs_table(results: dict) -> list[str]:
    """Per partition: each steered arm against its plain arm and each mixture against its parts, on the same
    test images, with the tests of the table against the baseline."""
    rows = [(p["partition"], arm, reference, tests) for p in results["partitions"]
            for arm, against in (p.get("pairs") or {}).items() for reference, tests in against.items()]
    intro = ("**Steered and mixed arms against their references** (a steered arm against the same generators "
             "unsteered, a mixture against each of its generators steered the same way), the same tests as above "
             "with the reference in the baseline's place (McNemar counts: only the arm vs only the reference).")
    return _paired_table(results, intro, ["partition", "arm", "against"], rows)


def _dict_metric_tables(results: dict) -> list[str]:
    """Per-partition tables for dict-valued metrics (per-class accuracy, per-class AP), one column per arm."""
    lines: list[str] = []
    arms = results["arms"]
    for part in results["partitions"]:
        values = {arm: part["arms"].get(arm) or {} for arm in arms}
        keys = sorted({k for v in values.values() for k, x in v.items() if isinstance(x, dict)})
        for key in keys:
            names = sorted({n for v in values.values() for n in (v.get(key) or {})})
            lines += ["", f"**P{part['partition']} {key}**", "", "| | " + " | ".join(arms) + " |",
                      "|---" * (len(arms) + 1) + "|"]
            for name in names:
                cells = [_fmt((values[arm].get(key) or {}).get(name)) for arm in arms]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def open_set_table(results: dict) -> list[str]:
    """Per held-out type and arm, each open-set metric's mean ± std over partitions, and arm - baseline."""
    section = results.get("open_set")
    if not section:
        return []
    metrics, baseline = section["metrics"], results.get("baseline")
    scores = "; ".join(f"{name} = {text}" for name, text in section["unknown_scores"].items())
    lines = ["", f"**Open set.** Each defect type in turn held out of training (no base image, no generator); its "
             f"images are the unknown positives, the known types' test images the negatives. Unknown scores: "
             f"{scores}. fpr95 = false-positive rate at 95% true-positive rate. Mean ± std over partitions; the "
             "tables above are the means over the held-out types; `every run`: mean ± std over every held-out "
             "type and partition (differences paired per run).", "",
             "| held out | arm | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    rows = list(section["summary"]["per_type"].items())
    if section["summary"].get("over_held_out_runs"):
        rows.append(("every run", section["summary"]["over_held_out_runs"]))
    for held_out, summary in rows:
        for arm in results["arms"]:
            stats = summary["arms"].get(arm, {})
            lines.append(f"| {held_out} | {arm} | " + " | ".join(fmt_stats(stats.get(m)) for m in metrics) + " |")
            diff = summary["difference"].get(arm)
            if diff is not None:
                lines.append(f"| {held_out} | {arm} - {baseline} | "
                             + " | ".join(fmt_stats(diff.get(m), signed=True) for m in metrics) + " |")
    return lines + open_set_tests_table(section)


def open_set_tests_table(section: dict) -> list[str]:
    """Per held-out type, partition and arm: the paired tests against the baseline on the same test images."""
    rows = [(t, p["partition"], arm, tests) for p in section["partitions"] for t, run in p["held_out"].items()
            for arm, tests in (run.get("tests") or {}).items()]
    if not rows:
        return []
    keys = sorted({k for *_, tests in rows for k in tests})
    return ["", "**Open set: is it noise?** Each arm against the baseline on the same test images: exact McNemar "
            "test for the closed-set accuracy on the known images (p, then images only the arm got right vs only "
            "the baseline got right); paired bootstrap 95% interval of the AUROC difference for each unknown score.",
            "", "| held out | partition | arm | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys),
            *[f"| {t} | P{k} | {arm} | " + " | ".join(_test_cell(tests.get(m, {})) for m in keys) + " |"
              for t, k, arm, tests in sorted(rows, key=lambda r: (r[0], r[1], r[2]))]]


def steering_line(record: dict) -> str:
    """How an arm's steering ended: the share of synthetic samples each type (and generator) got."""
    shares = ", ".join(f"{t} {v:.2f}" for t, v in record.get("drawn_share", {}).items())
    text = f"steering {record.get('mode')}: synthetic samples per type {shares}"
    if record.get("drawn_share_by_generator"):
        text += "; per generator " + ", ".join(f"{g} {v:.2f}"
                                               for g, v in record["drawn_share_by_generator"].items())
    if record.get("mode") == "hard":
        text += f"; each the hardest of {record.get('candidates')} candidates"
    return text


def write_report_md(results: dict, path: str | Path, chart: Path | None = None) -> Path:
    """A page a person reads: what ran, on which split and schedule, the tables, and whether it is noise."""
    arms = results["arms"]
    title = f"# {results['task']}: " + ", ".join(arms)
    lines = [title, ""]
    if results.get("command"):
        lines += ["```", str(results["command"]), "```", ""]
    if results.get("manifest"):
        lines.append(f"- manifest: `{results['manifest']}`")
    schedule = results.get("schedule")
    if isinstance(schedule, dict):
        lines.append("- schedule (every arm): " + ", ".join(f"{k} = {v}" for k, v in schedule.items()))
    for part in results["partitions"]:
        counts = {k: v for k, v in part.items() if isinstance(v, (int, float)) and k != "partition"}
        runs = part.get("runs") or {}
        seen = ", ".join(f"{arm} {r.get('epochs')} epochs, {r.get('synthetic_samples_seen')} synthetic, "
                         f"{r.get('wall_seconds')} s" for arm, r in runs.items())
        lines.append(f"- P{part['partition']}: " + ", ".join(f"{k} = {v}" for k, v in counts.items())
                     + (f"; {seen}" if seen else ""))
        for arm, r in runs.items():
            if r.get("steering"):
                lines.append(f"  - {arm}: {steering_line(r['steering'])}")
    if results.get("wall_seconds") is not None:
        lines.append(f"- wall time {results['wall_seconds']} s, from {results.get('started')} to "
                     f"{results.get('finished')}; commit {results.get('git_commit') or 'unknown'}")
    lines.append("- std is the sample standard deviation over partitions; difference = arm - "
                 f"{results.get('baseline') or 'baseline'} per partition")
    if chart is not None:
        lines += ["", f"![{results.get('headline')}]({Path(chart).name})"]
    for metric in results["metrics"]:
        lines += ["", *metric_table(results, metric)]
    lines += open_set_table(results)
    lines += tests_table(results)
    lines += pairs_table(results)
    lines += _dict_metric_tables(results)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _summary_lines(summary: dict, arms: list[str], metrics: list[str]) -> list[str]:
    """One line per metric: every arm's mean ± std and, in brackets, its difference to the baseline."""
    lines = []
    for metric in metrics:
        parts = []
        for arm in arms:
            stats = summary["arms"].get(arm, {}).get(metric)
            if not stats:
                continue
            text = f"{arm} {fmt_stats(stats)}"
            diff = (summary.get("difference", {}).get(arm) or {}).get(metric)
            if diff:
                text += f" ({fmt_stats(diff, signed=True)})"
            parts.append(text)
        if parts:
            lines.append(f"{metric}: " + " | ".join(parts))
    return lines


def print_summary(results: dict, out: Path) -> None:
    """The console ending of a run: one line per metric, every arm's mean ± std and difference."""
    for line in _summary_lines(results["summary"], results["arms"], results["metrics"]):
        print(line)
    if results.get("open_set"):
        section = results["open_set"]
        print(f"open set: held out {', '.join(section['held_out_types'])} in turn (the lines above are means over "
              f"them); per held-out type in {out / REPORT_NAME}")
        per_run = section["summary"].get("over_held_out_runs")
        if per_run:
            for line in _summary_lines(per_run, results["arms"], results["metrics"]):
                print(f"  over every held-out run, {line}")
    print(f"results: {out / RESULTS_NAME}, {out / REPORT_NAME}; models and predictions: {out}/P<k>/<arm>/; "
          f"TensorBoard: tensorboard --logdir {out / 'tb'}")
