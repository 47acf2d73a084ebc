"""`classify --open-set`: unknown-score metrics by hand, then tiny end-to-end runs on the toy data, including
the protocol check that no image of the held-out type reaches training or any generator."""

import csv
import json
import math
import shutil

import numpy as np
import pytest

from inspect_train.cli import main
from inspect_train.metrics.open_set import OPEN_SET_METRICS, fpr_at_tpr, open_set_metrics, unknown_scores
from inspect_train.report import read_results

TYPES = ["hole", "scratch", "stain"]


# ----------------------------------------------------------------------------- metrics by hand


def test_unknown_scores_by_hand():
    scores = unknown_scores(np.array([[0.0, 0.0], [math.log(3.0), 0.0]]))
    assert scores["msp"] == pytest.approx([0.5, 0.25])  # softmax (1/2, 1/2) and (3/4, 1/4)
    assert scores["energy"] == pytest.approx([-math.log(2.0), -math.log(4.0)])  # -log(1 + 1), -log(3 + 1)


def test_known_vs_unknown_auroc_ap_and_fpr95_by_hand():
    # The wanted msp (1 - max softmax) of each image, set through two logits: log((1 - t) / t) and 0, so class 0
    # wins with softmax 1 - t (t < 0.5).
    known, unknown = [0.05, 0.1, 0.15, 0.45], [0.2, 0.25, 0.3, 0.475]
    target = np.array(known + unknown)
    logits = np.stack([np.log((1 - target) / target), np.zeros_like(target)], axis=1)
    labels = np.array([0, 0, 0, 1, 0, 0, 0, 0])
    is_unknown = np.array([False] * 4 + [True] * 4)
    m = open_set_metrics(logits, labels, is_unknown)
    assert unknown_scores(logits)["msp"] == pytest.approx(target)
    assert m["msp_auroc"] == pytest.approx(13 / 16)  # unknown above known in 3 + 3 + 3 + 4 of 16 pairs
    assert m["msp_auprc"] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 5) / 4)  # precision at each unknown's rank
    assert m["msp_fpr95"] == pytest.approx(0.25)  # catching all four unknowns (>= 0.2) also flags 0.45
    assert m["closed_set_accuracy"] == pytest.approx(0.75)  # the known image labelled 1 is predicted 0
    assert (m["n_known"], m["n_unknown"]) == (4, 4)
    assert set(OPEN_SET_METRICS) <= set(m)


def test_msp_and_energy_disagree_on_confident_but_weak_logits():
    # A known image with large, equal logits: maximally unsure by softmax, strongly "seen" by energy.
    logits = np.array([[5.0, 5.0], [1.0, 0.0]])
    m = open_set_metrics(logits, np.array([0, -1]), np.array([False, True]))
    assert m["msp_auroc"] == 0.0 and m["energy_auroc"] == 1.0
    assert m["msp_fpr95"] == 1.0 and m["energy_fpr95"] == 0.0


def test_fpr95_keeps_every_roc_point():
    # 20 tied (known, unknown) pairs: the ROC points (k/20, k/20) are collinear; the TPR first reaches 0.95 at
    # k = 19, so the FPR there is 0.95 (with collinear points dropped it would read 1.0).
    score = np.repeat(np.arange(20.0), 2)
    is_unknown = np.tile([False, True], 20)
    assert fpr_at_tpr(is_unknown, score) == pytest.approx(0.95)
    assert fpr_at_tpr(np.ones(4, bool), np.arange(4.0)) is None


def test_undefined_without_unknown_images():
    m = open_set_metrics(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), np.array([False, False]))
    assert m["msp_auroc"] is None and m["energy_fpr95"] is None and m["closed_set_accuracy"] == 0.5


# ----------------------------------------------------------------------------- end to end


def classify(data, tiny_config, out, *extra):
    return main(["classify", "--data", str(data), "--category", "toy", "--config", tiny_config, "--quiet",
                 "--partitions", "1", "--out", str(out), *extra])


def test_open_set_end_to_end_nothing_of_the_held_out_type_reaches_training(toy_root, tiny_config, tmp_path,
                                                                            monkeypatch, capsys):
    from inspect_train.tasks import generators, runner

    pools, made = [], []
    real_pool, build = runner.RealPool, generators.build_generator

    def spy_pool(data, base_names, classes, device):
        pools.append(({t: list(n) for t, n in base_names.items()}, list(classes)))
        return real_pool(data, base_names, classes, device)

    def spy_build(name, request):
        made.append((name, {t: list(n) for t, n in request.base_names.items()}))
        return build(name, request)

    monkeypatch.setattr(runner, "RealPool", spy_pool)
    monkeypatch.setattr(generators, "build_generator", spy_build)
    out = tmp_path / "run"
    assert classify(toy_root, tiny_config, out, "--aug", "crop-paste", "--open-set") == 0
    said = capsys.readouterr().out
    assert "msp_auroc: none" in said and "open set: held out hole, scratch, stain" in said

    manifest = json.loads((out / "manifest.json").read_text())["partitions"][0]["defects"]
    base = {t: split["base"] for t, split in manifest.items()}
    known_of = {t: {k: base[k] for k in TYPES if k != t} for t in TYPES}
    # The protocol: each held-out run's real pool (one per arm) and generator saw the known types' base sets only.
    assert pools == [(known_of[t], [k for k in TYPES if k != t]) for t in TYPES for _ in ("none", "crop-paste")]
    assert made == [("crop-paste", known_of[t]) for t in TYPES]

    results = read_results(out)
    assert results["metrics"] == OPEN_SET_METRICS and results["headline"] == "msp_auroc"
    section = results["open_set"]
    assert section["held_out_types"] == TYPES and set(section["unknown_scores"]) == {"msp", "energy"}
    held = section["partitions"][0]["held_out"]
    assert list(held) == TYPES and "held_out" not in results["partitions"][0]
    for t, entry in held.items():
        used = {(c, n) for c, n in entry["real_images_used"]}
        assert used == {(k, n) for k, names in known_of[t].items() for n in names}
        assert entry["classes"] == [k for k in TYPES if k != t]
        paired = entry["tests"]["crop-paste"]  # against real-only on the same test images
        assert set(paired) == {"closed_set_accuracy", "msp_auroc", "energy_auroc"}
        assert paired["closed_set_accuracy"]["test"] == "mcnemar_exact"
        for score in ("msp", "energy"):
            interval = paired[f"{score}_auroc"]
            expected = entry["arms"]["crop-paste"][f"{score}_auroc"] - entry["arms"]["none"][f"{score}_auroc"]
            assert interval["difference"] == pytest.approx(expected)
            assert interval["low"] <= interval["high"] and interval["n_resamples"] > 0
        assert entry["test_unknown"] == len(base[t]) + len(manifest[t]["test"])  # all of it, base and test
        for arm in ("none", "crop-paste"):
            metrics = entry["arms"][arm]
            for key in OPEN_SET_METRICS:
                assert 0.0 <= metrics[key] <= 1.0, (t, arm, key)
            assert metrics["closed_set"]["classes"] == entry["classes"]
            folder = out / "P1" / arm / f"unknown-{t}"
            assert (folder / "model.pt").is_file() and list((out / "tb" / "P1" / arm / f"unknown-{t}").glob("events.*"))
            with (folder / "predictions.csv").open() as handle:
                rows = list(csv.DictReader(handle))
            unknown_rows = [r for r in rows if r["true_class"] == "unknown"]
            assert {r["file"] for r in unknown_rows} == {f"{t}/{n}" for n in base[t] + manifest[t]["test"]}
            assert {r["file"].split("/")[0] for r in rows} - {t} == set(entry["classes"])
            assert len(rows) == metrics["n_known"] + metrics["n_unknown"]
            assert all(r["correct"] == "" for r in unknown_rows) and "unknown_energy" in rows[0]
            known_rows = [r for r in rows if r["true_class"] != "unknown"]
            accuracy = sum(int(r["correct"]) for r in known_rows) / len(known_rows)
            assert accuracy == pytest.approx(metrics["closed_set_accuracy"])
    # Summaries: per held-out type over partitions, overall over the types' means, and arm - real-only.
    per_type, scratch = section["summary"]["per_type"]["scratch"], held["scratch"]["arms"]
    assert per_type["arms"]["none"]["energy_auroc"]["mean"] == pytest.approx(scratch["none"]["energy_auroc"])
    assert per_type["difference"]["crop-paste"]["msp_auroc"]["mean"] == pytest.approx(
        scratch["crop-paste"]["msp_auroc"] - scratch["none"]["msp_auroc"])
    overall = results["summary"]["arms"]["none"]["msp_auroc"]["mean"]
    assert overall == pytest.approx(np.mean([held[t]["arms"]["none"]["msp_auroc"] for t in TYPES]))
    assert section["summary"]["overall"] == results["summary"]
    # Over every held-out run (one partition here): the spread between the held-out types, paired differences.
    per_run = section["summary"]["over_held_out_runs"]
    values = [held[t]["arms"]["crop-paste"]["msp_auroc"] for t in TYPES]
    diffs = [held[t]["arms"]["crop-paste"]["msp_auroc"] - held[t]["arms"]["none"]["msp_auroc"] for t in TYPES]
    assert per_run["arms"]["crop-paste"]["msp_auroc"]["mean"] == pytest.approx(np.mean(values))
    assert per_run["arms"]["crop-paste"]["msp_auroc"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert per_run["difference"]["crop-paste"]["msp_auroc"]["std"] == pytest.approx(np.std(diffs, ddof=1))
    report = (out / "report.md").read_text()
    assert "| every run | crop-paste - none |" in report
    assert "**Open set.**" in report and "| held out | arm | msp_auroc |" in report
    assert "| stain | crop-paste - none |" in report
    assert "**Open set: is it noise?**" in report and "| hole | P1 | crop-paste | p = " in report


def test_unknown_names_the_held_out_type_same_seed_same_numbers_with_good(toy_root, tiny_config, tmp_path):
    runs = []
    for name in ("a", "b"):
        assert classify(toy_root, tiny_config, tmp_path / name, "--aug", "perlin", "--unknown", "scratch",
                        "--with-good", "--seed", "3") == 0
        runs.append(read_results(tmp_path / name))
    first, second = (r["open_set"]["partitions"][0]["held_out"] for r in runs)
    assert list(first) == ["scratch"]
    assert first["scratch"]["arms"] == second["scratch"]["arms"]
    assert first["scratch"]["classes"] == ["hole", "stain", "good"]
    assert first["scratch"]["test_good"] > 0, "test/good joins the known test images"
    assert runs[0]["config"]["run"]["open_set"] == ["scratch"]


@pytest.mark.parametrize("extra,message", [
    (["--unknown", "crack"], "--unknown crack: not a defect type"),
    (["--unknown", "good", "--with-good"], "--unknown good: not a defect type"),
])
def test_bad_unknown_exits_2(toy_root, tiny_config, tmp_path, capsys, extra, message):
    assert classify(toy_root, tiny_config, tmp_path / "o", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists(), "nothing written"


def test_two_defect_types_are_too_few(toy_root, tiny_config, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(toy_root / "toy", data / "toy")
    for folder in ("test", "ground_truth"):
        shutil.rmtree(data / "toy" / folder / "stain")
    assert classify(data, tiny_config, tmp_path / "o", "--open-set") == 2
    err = capsys.readouterr().err
    assert "at least 2 known ones left" in err and "Traceback" not in err


def test_epochs_count_only_the_known_base_images(toy_root, tiny_config, tmp_path):
    assert classify(toy_root, tiny_config, tmp_path / "o", "--unknown", "scratch", "--epochs", "1",
                    "--batch-size", "4") == 0
    results = read_results(tmp_path / "o")
    base = json.loads((tmp_path / "o" / "manifest.json").read_text())["partitions"][0]["defects"]
    known = sum(len(base[t]["base"]) for t in TYPES if t != "scratch")
    assert known < sum(len(base[t]["base"]) for t in TYPES)
    assert results["config"]["steps"] == math.ceil(known / 4)
