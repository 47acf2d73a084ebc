"""`inspect-train classify` end to end at toy size: several arms in one command, results.json schema with
AU-PR and paired tests, the output layout, the protocol audit, determinism, and bad input -> exit 2."""

import csv
import json

import pytest
import yaml

from inspect_train.cli import main
from generators.dfmgan.checkpoint import load_checkpoint
from inspect_train.data.category import load_category
from inspect_train.protocol import get_partition, make_manifest
from inspect_train.report import read_results
from inspect_train.tasks.runner import steps_for_epochs


def classify(toy_root, tiny_config, out, *extra):
    argv = ["classify", "--data", str(toy_root), "--category", "toy", "--config", tiny_config, "--quiet",
            "--out", str(out), *extra]
    return main(argv)


def check_schema(results, arms, partitions):
    assert results["task"] == "classify" and results["arms"] == arms
    assert results["command"].startswith("inspect-train classify")
    assert results["manifest"].endswith("manifest.json")
    assert results["config"]["steps"] == 3 and results["schedule"]["steps"] == 3
    assert {"torch", "timm"} <= set(results["packages"]) and results["wall_seconds"] >= 0
    assert [p["partition"] for p in results["partitions"]] == partitions
    for part in results["partitions"]:
        assert list(part["arms"]) == arms
        for arm in arms:
            metrics = part["arms"][arm]
            assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["auprc"] <= 1
            assert set(metrics["per_class_accuracy"]) == set(metrics["classes"])
            assert set(metrics["per_class_ap"]) == set(metrics["classes"])
            matrix = metrics["confusion_matrix"]
            assert len(matrix) == len(metrics["classes"]) and sum(map(sum, matrix)) == metrics["n_test"]
            assert part["runs"][arm]["wall_seconds"] >= 0
    summary = results["summary"]
    for arm in arms:
        assert set(summary["arms"][arm]["accuracy"]) == {"mean", "std", "n"}
        assert "auprc" in summary["arms"][arm]
        if arm != "none" and "none" in arms:
            expected = summary["arms"][arm]["auprc"]["mean"] - summary["arms"]["none"]["auprc"]["mean"]
            assert summary["difference"][arm]["auprc"]["mean"] == pytest.approx(expected)


def test_several_arms_one_command_schema_layout_and_audit(toy_root, tiny_config, tmp_path):
    out = tmp_path / "run"
    assert classify(toy_root, tiny_config, out, "--aug", "crop-paste", "perlin", "--partitions", "1", "2") == 0
    results = read_results(out)
    arms = ["none", "crop-paste", "perlin"]
    check_schema(results, arms, [1, 2])
    assert results["schedule"]["synthetic_per_batch"] == 4
    assert results["partitions"][0]["runs"]["crop-paste"]["synthetic_samples_seen"] == 12
    assert results["partitions"][0]["runs"]["none"]["synthetic_samples_seen"] == 0
    for part in results["partitions"]:  # every arm against the baseline, on the same test images
        assert set(part["tests"]) == {"crop-paste", "perlin"}
        for tests in part["tests"].values():
            assert tests["accuracy"]["test"] == "mcnemar_exact" and 0 < tests["accuracy"]["p_value"] <= 1
            assert tests["auprc"]["low"] <= tests["auprc"]["high"]
    report = (out / "report.md").read_text()
    assert "| auprc | P1 | P2 | mean ± std | difference ± std |" in report
    assert "| perlin |" in report and "Is it noise?" in report and "![accuracy](summary.png)" in report
    assert (out / "summary.png").stat().st_size > 1000
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["steps"] == 3 and config["run"]["aug"] == arms
    manifest = json.loads((out / "manifest.json").read_text())
    for part, entry in zip(manifest["partitions"], results["partitions"]):
        used = {(c, n) for c, n in entry["real_images_used"]}
        base = {(d, n) for d, split in part["defects"].items() for n in split["base"]}
        assert used == base, "training saw exactly the base set, never a test image"
        k = entry["partition"]
        for arm in arms:
            assert (out / f"P{k}" / arm / "model.pt").is_file()
            assert list((out / "tb" / f"P{k}" / arm).glob("events.*"))
            with (out / f"P{k}" / arm / "predictions.csv").open() as handle:
                rows = list(csv.DictReader(handle))
            assert len(rows) == entry["arms"][arm]["n_test"]
            accuracy = sum(int(r["correct"]) for r in rows) / len(rows)
            assert accuracy == pytest.approx(entry["arms"][arm]["accuracy"])
            test_names = {f"{d}/{n}" for d, split in part["defects"].items() for n in split["test"]}
            assert {r["file"] for r in rows} == test_names


def test_real_only_arms_and_every_generator_in_one_command(toy_root, tiny_config, tmp_path):
    out = tmp_path / "all"
    assert classify(toy_root, tiny_config, out, "--aug", "none", "classic", "cut-paste", "perlin",
                    "--partitions", "1") == 0
    results = read_results(out)
    check_schema(results, ["none", "classic", "cut-paste", "perlin"], [1])
    runs = results["partitions"][0]["runs"]
    assert runs["classic"]["synthetic_samples_seen"] == 0 and runs["cut-paste"]["synthetic_samples_seen"] == 12


def test_epochs_to_steps(toy_root):
    toy32 = load_category(toy_root, "toy", size=(32, 32))
    part = get_partition(make_manifest(toy32.index, partitions=1, seed=0), 1)
    classes = ["hole", "scratch", "stain"]
    assert steps_for_epochs(1, toy32, part, classes, 8) == 3  # 18 base images / 8 per step, rounded up
    assert steps_for_epochs(2, toy32, part, [*classes, "good"], 8) == -(-2 * (18 + len(toy32.train_good)) // 8)


def test_dfmgan_trains_missing_generators_then_reuses_them(toy_root, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert classify(toy_root, tiny_config, out, "--aug", "dfmgan", "--partitions", "1", "--no-baseline",
                    "--backbone-steps", "2", "--threads", "1") == 0  # the CLI wins over the preset's backbone_steps (1)
    said = capsys.readouterr().out
    assert "stage 1: training" in said and "stage 2: training P1 'hole'" in said
    index = json.loads((out / "generators" / "index.json").read_text())
    assert load_checkpoint(out / "generators" / index["backbone"]["checkpoint"], kind="backbone")["step"] == 2
    assert load_checkpoint(out / "generators" / index["defects"]["p1"]["hole"]["checkpoint"], kind="defect")["step"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert index["defects"]["p1"]["hole"]["base"] == sorted(manifest["partitions"][0]["defects"]["hole"]["base"])
    results = read_results(out)
    check_schema(results, ["dfmgan"], [1])
    assert results["config"]["cpu_threads"] == 1 and results["partitions"][0]["tests"] == {}
    config = yaml.safe_load((out / "config.yaml").read_text())  # the GAN flags are settings: a rerun repeats them
    dfmgan = config["generators"]["dfmgan"]
    assert dfmgan["backbone_steps"] == 2 and dfmgan["config"] == results["config"]["generators"]["dfmgan"]["config"]
    again = tmp_path / "again"
    assert classify(toy_root, tiny_config, again, "--aug", "dfmgan", "--partitions", "1", "--no-baseline",
                    "--generators", str(out / "generators"), "--manifest", str(out / "manifest.json")) == 0
    assert "reusing P1 'hole'" in capsys.readouterr().out
    # Another split must not reuse generators trained on a different base set.
    code = classify(toy_root, tiny_config, tmp_path / "other", "--aug", "dfmgan", "--partitions", "1",
                    "--no-baseline", "--generators", str(out / "generators"), "--seed", "7")
    assert code == 2 and "another base set" in capsys.readouterr().err


def test_same_seed_same_numbers_config_yaml_repeats_the_run_and_with_good(toy_root, tiny_config, tmp_path):
    assert classify(toy_root, tiny_config, tmp_path / "a", "--aug", "perlin", "--partitions", "1", "--with-good",
                    "--seed", "3") == 0
    # The run's config.yaml is a preset: it repeats the settings (here with_good) without the flag.
    assert main(["classify", "--data", str(toy_root), "--category", "toy", "--config",
                 str(tmp_path / "a" / "config.yaml"), "--aug", "perlin", "--partitions", "1", "--seed", "3",
                 "--quiet", "--out", str(tmp_path / "b")]) == 0
    runs = [read_results(tmp_path / name)["partitions"][0] for name in ("a", "b")]
    assert runs[0]["arms"] == runs[1]["arms"] and runs[0]["tests"] == runs[1]["tests"]
    metrics = runs[0]["arms"]["perlin"]
    assert metrics["classes"][-1] == "good" and metrics["n_test"] > 40, "test/good joins the test set"
    assert 0 <= metrics["defect_vs_good_ap"] <= 1 and 0 <= metrics["defect_vs_good_auroc"] <= 1
    assert "defect_vs_good_ap" in read_results(tmp_path / "a")["metrics"]


@pytest.mark.parametrize("extra,message", [
    (["--synthetic-ratio", "1.5"], "synthetic-ratio"),
    (["--model", "no_such_net"], "timm model"),
    (["--weights", "/nonexistent/w.pth"], "weights file not found"),
    (["--partitions", "0"], "partitions"),
    (["--steps", "0"], "steps"),
    (["--threads", "0"], "threads"),
    (["--resolution", "abc"], "resolution"),
    (["--lr", "-1"], "--lr"),
    (["--config", "no-such-preset"], "config not found"),
    (["--aug", "none", "--no-baseline"], "cannot go with --no-baseline"),
])
def test_bad_input_exits_2(toy_root, tiny_config, tmp_path, capsys, extra, message):
    argv = ["--partitions", "1", *extra]
    if "--config" in extra:
        code = main(["classify", "--data", str(toy_root), "--category", "toy", "--out", str(tmp_path), *argv])
    else:
        code = classify(toy_root, tiny_config, tmp_path, *argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_data_exits_2(tmp_path, capsys):
    assert main(["classify", "--data", str(tmp_path / "nope"), "--category", "x", "--out", str(tmp_path / "o")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["classify", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--category" in capsys.readouterr().err
