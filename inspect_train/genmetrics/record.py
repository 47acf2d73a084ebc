"""Where an evaluate-gen run leaves its numbers: results.json (every run), report.md (one line each), TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

from inspect_train.errors import InputError
from inspect_train.protocol import write_json_atomic

HEADER = (
    "| when (UTC) | category | defect | generated | real set | n real | n KID | KID x1e3 (mean ± std) "
    "| n LPIPS | clustered LPIPS (all / ≥2 members) | features |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def read_results(out_dir: Path) -> dict:
    """The runs so far in <out>/results.json (checked before any work, so a bad file fails fast)."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        return {"task": "evaluate-gen", "runs": []}
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path}: exists but is not valid JSON; move it away or choose another --out") from None
    if not isinstance(results, dict) or results.get("task") != "evaluate-gen" or not isinstance(results.get("runs"), list):
        raise InputError(f"{path}: is not an evaluate-gen results file; choose another --out")
    return results


def append_results(out_dir: Path, entry: dict) -> dict:
    """results.json holds {'task': 'evaluate-gen', 'runs': [...]}, newest run last."""
    results = read_results(out_dir)
    results["runs"].append(entry)
    write_json_atomic(results, Path(out_dir) / "results.json")
    return results


def report_line(entry: dict) -> str:
    kid, cl, real, gen = entry["kid"], entry["clustered_lpips"], entry["real"], entry["generated"]
    nonempty = "n/a" if cl["value_nonempty"] is None else f"{cl['value_nonempty']:.3f}"
    features = "RANDOM (test only)" if entry["random_features"] else f"Inception-v3 / LPIPS-{cl['net']}"
    real_set = real["set"] + (f" P{real['partition']}" if real.get("partition") is not None else "")
    return (
        f"| {entry['finished_at']} | {real['category']} | {real['defect']} | {gen['kind']}: {Path(gen['path']).name} "
        f"| {real_set} | {real['n']} | {kid['n_generated']} | {kid['x1e3_mean']:.2f} ± {kid['x1e3_std']:.2f} "
        f"| {cl['n_generated']} | {cl['value']:.3f} / {nonempty} | {features} |\n"
    )


def append_report(out_dir: Path, entry: dict) -> Path:
    """One table row per run; the header is written when the file has none yet."""
    path = Path(out_dir) / "report.md"
    existing = path.read_text() if path.is_file() else ""
    with path.open("a") as handle:
        if HEADER.splitlines()[0] not in existing:
            if existing and not existing.endswith("\n\n"):
                handle.write("\n" if existing.endswith("\n") else "\n\n")
            handle.write("## evaluate-gen\n\n" + HEADER)
        handle.write(report_line(entry))
    return path


def log_tensorboard(out_dir: Path, entry: dict, step: int) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    tb_dir = Path(out_dir) / "tb"
    prefix = f"evaluate_gen/{entry['real']['defect']}"
    with SummaryWriter(str(tb_dir)) as writer:
        writer.add_scalar(f"{prefix}/kid_x1e3", entry["kid"]["x1e3_mean"], step)
        writer.add_scalar(f"{prefix}/kid_x1e3_std", entry["kid"]["x1e3_std"], step)
        writer.add_scalar(f"{prefix}/clustered_lpips", entry["clustered_lpips"]["value"], step)
    return tb_dir
