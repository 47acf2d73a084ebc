"""Where an evaluate-gen run leaves its numbers: results.json (everything), report.md (a table per defect
type, the real base set first, then each generator, with its contact sheet) and TensorBoard (the sheets and
the headline scalars)."""

from __future__ import annotations

from pathlib import Path

from inspect_train.protocol import write_json_atomic
from inspect_train.tb_writer import open_writer

COLUMNS = ("source", "n", "area median [10%, 90%]", "components", "on border", "elongation", "angle from horizontal",
           "centroid spread", "empty", "mask distance", "real-vs-generated accuracy", "diversity", "mask 1-IoU")
KID_COLUMNS = ("KID x1e3", "clustered LPIPS")

HOW_TO_READ = """How to read: the first row of each table is the real base set (all a generator may see; no test image is
read), each other row one generator. Mask columns: the median defect area as a fraction of the image (10% and
90% quantiles), mean number of 8-connected pieces, the fraction of masks touching the image border, the median
elongation (1 = round) and angle from horizontal of the largest piece, the spread of the mask centres (0 =
always the same place, about 0.4 = anywhere) and the fraction of empty masks. *Mask distance*: how far the
generator's mask statistics are from the real ones (0 = the same, about 2 = no overlap). *Real-vs-generated
accuracy*: a classifier trained to tell real from generated, held-out accuracy (0.5 = indistinguishable, 1.0 =
always told apart) ± std over folds. *Diversity*: mean distance between samples on a fixed random network
(compare with the real row; 0 = all the same); *mask 1-IoU*: how different the masks are from each other (0 =
one mask repeated). See docs/evaluate-gen.md."""


def _num(value, fmt: str = "{:.2f}", none: str = "n/a") -> str:
    return none if value is None else fmt.format(value)


def table_rows(defect_entry: dict, with_kid: bool) -> list[list[str]]:
    rows = []
    for row in defect_entry["rows"]:
        mask = row["mask"]
        real = row["kind"] == "real"
        two = row.get("two_sample") or {}
        if real:
            distance = "0 (reference)"
            accuracy = "0.5 (chance)"
        else:
            distance = _num(row["mask_distance"]["value"])
            accuracy = (f"{two['accuracy']:.2f} ± {two['std']:.2f}" if two.get("accuracy") is not None
                        else f"n/a ({two.get('why', 'not computed')})")
        cells = [
            row["source"], str(row["n"]),
            f"{_num(mask.get('area_median'), '{:.3f}')} [{_num(mask.get('area_q10'), '{:.3f}')}, "
            f"{_num(mask.get('area_q90'), '{:.3f}')}]",
            _num(mask.get("components_mean")), _num(mask.get("border_fraction")),
            _num(mask.get("elongation_median"), "{:.1f}"), _num(mask.get("orientation_abs_median_deg"), "{:.0f}°"),
            _num(mask.get("centroid_spread")), _num(mask.get("empty_fraction")), distance, accuracy,
            _num(row.get("diversity"), "{:.3f}"), _num(row.get("mask_diversity")),
        ]
        if with_kid:
            kid, lp = row.get("kid"), row.get("clustered_lpips")
            cells += ["" if real else (f"{kid['x1e3_mean']:.2f} ± {kid['x1e3_std']:.2f}" if kid else "n/a"),
                      "" if real else (f"{lp['value']:.3f}" if lp else "n/a")]
        rows.append(cells)
    return rows


def markdown_table(defect_entry: dict, with_kid: bool) -> str:
    header = list(COLUMNS) + (list(KID_COLUMNS) if with_kid else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(defect_entry, with_kid)]
    return "\n".join(lines) + "\n"


def report_markdown(results: dict) -> str:
    with_kid = bool(results["kid_lpips"]["computed"])
    size = "x".join(str(v) for v in results["resolution"])
    parts = [
        f"# evaluate-gen: {results['category']}, partition {results['partition']}\n",
        f"- data: `{results['data']}`; manifest: `{results['manifest']}`",
        "- compared with: the partition's base set (real row); test images are never read",
        f"- images compared at {size} ({results['channels']} channel(s)); up to {results['n']} samples per "
        f"defect type and generator; seed {results['seed']}; device {results['device']}; {results['wall_s']:.1f} s",
        "- KID / clustered LPIPS: " + "; ".join(x for x in ("computed" if with_kid else None, results["kid_lpips"]["why"]) if x),
    ]
    parts += [f"- warning: {w}" for w in results["warnings"]]
    parts += ["", HOW_TO_READ, ""]
    for defect, entry in results["defects"].items():
        parts.append(f"## {defect} (base set: {len(entry['base_images'])} image(s))\n")
        parts.append(markdown_table(entry, with_kid))
        parts.append(f"![{defect}]({entry['sheet']})\n")
    return "\n".join(parts)


def write_outputs(out_dir: Path, results: dict) -> None:
    out_dir = Path(out_dir)
    write_json_atomic(results, out_dir / "results.json")
    (out_dir / "report.md").write_text(report_markdown(results))


def log_tensorboard(out_dir: Path, results: dict, sheets: dict) -> Path:
    """The contact sheets as images and the headline numbers as scalars (step 0), under <out>/tb."""
    tb_dir = Path(out_dir) / "tb"
    with open_writer(tb_dir) as writer:
        for defect, entry in results["defects"].items():
            if defect in sheets:
                writer.add_image(f"evaluate_gen/{defect}/contact_sheet", sheets[defect], 0, dataformats="HWC")
            for row in entry["rows"]:
                prefix = f"evaluate_gen/{defect}/{row['source']}"
                values = {"border_fraction": row["mask"].get("border_fraction"),
                          "area_median": row["mask"].get("area_median"),
                          "diversity": row.get("diversity"),
                          "mask_distance": row["mask_distance"].get("value"),
                          "real_vs_generated_accuracy": (row.get("two_sample") or {}).get("accuracy"),
                          "kid_x1e3": (row.get("kid") or {}).get("x1e3_mean"),
                          "clustered_lpips": (row.get("clustered_lpips") or {}).get("value")}
                for name, value in values.items():
                    if value is not None:
                        writer.add_scalar(f"{prefix}/{name}", value, 0)
    return tb_dir
