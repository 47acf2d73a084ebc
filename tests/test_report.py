"""results.json / report.md / summary.png: the shared writer and reader used by every task."""

import json

import pytest

from inspect_train.errors import InputError
from inspect_train.report import read_results, run_record, write_results


def _record(parts, arms=("none", "crop-paste"), metrics=("accuracy",), baseline="none"):
    return run_record(task="classify", arms=list(arms), baseline=baseline, metrics=list(metrics),
                      headline=metrics[0], command="inspect-train classify", config={"steps": 10}, manifest=None,
                      schedule={"steps": 10}, partitions=parts, started=0.0)


def _parts():
    return [
        {"partition": 1, "arms": {"none": {"accuracy": 0.5, "per_class_accuracy": {"a": 1.0, "b": 0.0}},
                                  "crop-paste": {"accuracy": 0.75, "per_class_accuracy": {"a": 1.0, "b": 0.5}}},
         "tests": {"crop-paste": {"accuracy": {"test": "mcnemar_exact", "p_value": 0.25, "arm_only": 3,
                                               "baseline_only": 0}}}},
        {"partition": 2, "arms": {"none": {"accuracy": 0.25}, "crop-paste": {"accuracy": 0.5}}},
        {"partition": 3, "arms": {"none": {"accuracy": 0.75}, "crop-paste": {"accuracy": 0.5}}},
    ]


def test_summary_mean_std_difference_and_record(tmp_path):
    res = write_results(tmp_path, _record(_parts()))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == res
    s = res["summary"]
    assert s["arms"]["none"]["accuracy"]["mean"] == pytest.approx(0.5)
    assert s["arms"]["none"]["accuracy"]["std"] == pytest.approx(0.25)  # sample std of 0.5, 0.25, 0.75
    assert s["arms"]["crop-paste"]["accuracy"]["mean"] == pytest.approx(0.5833333)
    diff = s["difference"]["crop-paste"]["accuracy"]
    assert diff["mean"] == pytest.approx(0.0833333) and diff["std"] == pytest.approx(0.2886751) and diff["n"] == 3
    assert "none" not in s["difference"]
    assert {"packages", "git_commit", "started", "finished", "wall_seconds"} <= set(res)
    assert read_results(tmp_path)["arms"] == ["none", "crop-paste"]
    assert (tmp_path / "summary.png").stat().st_size > 1000


def test_report_rows_tests_and_dict_metrics(tmp_path):
    write_results(tmp_path, _record(_parts()))
    text = (tmp_path / "report.md").read_text()
    assert "| accuracy | P1 | P2 | P3 | mean ± std | difference ± std |" in text
    assert "| none | 0.500 | 0.250 | 0.750 | 0.500 ± 0.250 | - |" in text
    assert "| crop-paste | 0.750 | 0.500 | 0.500 | 0.583 ± 0.144 | +0.083 ± 0.289 |" in text
    assert "| P1 | crop-paste | p = 0.25 (3 vs 0) |" in text
    assert "| a | 1.000 | 1.000 |" in text and "| b | 0.000 | 0.500 |" in text


def test_no_baseline_and_a_missing_value(tmp_path):
    parts = [{"partition": 1, "arms": {"perlin": {"accuracy": 0.9, "auprc": None}}}]
    res = write_results(tmp_path, _record(parts, arms=("perlin",), metrics=("accuracy", "auprc"), baseline=None))
    assert res["summary"]["difference"] == {} and "auprc" not in res["summary"]["arms"]["perlin"]
    assert res["summary"]["arms"]["perlin"]["accuracy"] == {"mean": 0.9, "std": 0.0, "n": 1}
    text = (tmp_path / "report.md").read_text()
    assert "| perlin | 0.900 | 0.900 (n = 1) |" in text and "| perlin | - | - |" in text


def test_read_results_rejects_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_results(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{\"task\": 1}")
    with pytest.raises(InputError, match="lack"):
        read_results(tmp_path / "bad.json")
