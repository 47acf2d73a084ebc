"""results.json / report.md: the shared writer and reader used by classify and segment."""

import json

import pytest

from inspect_train.errors import InputError
from inspect_train.report import read_results, write_results


def _parts():
    return [
        {"partition": 1, "steps": 10, "baseline": {"accuracy": 0.5, "per_class_accuracy": {"a": 1.0, "b": 0.0}},
         "augmented": {"accuracy": 0.75, "per_class_accuracy": {"a": 1.0, "b": 0.5}}},
        {"partition": 2, "baseline": {"accuracy": 0.25}, "augmented": {"accuracy": 0.5}},
        {"partition": 3, "baseline": {"accuracy": 0.75}, "augmented": {"accuracy": 0.5}},
    ]


def test_summary_mean_std_difference(tmp_path):
    res = write_results(tmp_path, "classify", "crop-paste", "inspect-train classify", {"steps": 10},
                        tmp_path / "m.json", _parts(), ["accuracy"], extra={"schedule": {"steps": 10}})
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == res
    s = res["summary"]
    assert s["baseline"]["accuracy"]["mean"] == pytest.approx(0.5)
    assert s["baseline"]["accuracy"]["std"] == pytest.approx(0.25)  # sample std of 0.5, 0.25, 0.75
    assert s["augmented"]["accuracy"]["mean"] == pytest.approx(0.5833333)
    assert s["difference"]["accuracy"] == pytest.approx(0.0833333)
    assert res["schedule"] == {"steps": 10}
    assert read_results(tmp_path)["aug"] == "crop-paste"


def test_report_rows_and_generic_metrics(tmp_path):
    parts = [{"partition": k, "baseline": {"pixel_ap": 0.4 + k / 10, "pixel_auroc": 0.9},
              "augmented": {"pixel_ap": 0.6, "pixel_auroc": 0.95}} for k in (1, 2, 3)]
    write_results(tmp_path, "segment", "perlin", "cmd", {}, None, parts, ["pixel_ap", "pixel_auroc"])
    text = (tmp_path / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| P")]
    assert len(rows) == 6 and rows[0].startswith("| P1 | 0.500 | 0.600 | +0.100 |")
    assert text.count("| mean ± std |") == 2
    assert "| mean ± std | 0.600 ± 0.100 | 0.600 ± 0.000 | +0.000 ± 0.100 |" in text


def test_no_baseline(tmp_path):
    parts = [{"partition": 1, "baseline": None, "augmented": {"accuracy": 0.9}}]
    res = write_results(tmp_path, "classify", "perlin", "cmd", {}, None, parts, ["accuracy"])
    assert res["summary"]["baseline"] is None and res["summary"]["difference"] is None
    assert res["summary"]["augmented"]["accuracy"] == {"mean": 0.9, "std": 0.0, "n": 1}
    text = (tmp_path / "report.md").read_text()
    assert "| P1 | - | 0.900 | - |" in text and "| mean ± std | - | 0.900 (n = 1) | - |" in text


def test_read_results_rejects_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_results(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{\"task\": 1}")
    with pytest.raises(InputError, match="lack"):
        read_results(tmp_path / "bad.json")
