"""`inspect-train classify` end to end at toy size: every --aug, results.json schema, report rows,
the protocol audit, determinism, and bad input -> exit 2."""

import json

import pytest
import torch

from inspect_train.cli import main
from generators.dfmgan.checkpoint import load_checkpoint
from inspect_train.data.category import load_category
from inspect_train.protocol import get_partition, make_manifest
from inspect_train.report import read_results
from inspect_train.tasks.classify import ClassifySettings, run_partition, steps_for_epochs
from inspect_train.tasks.generators import generator_factory
from conftest import write_tiny_classify_config


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    write_tiny_classify_config(path)
    return str(path)


def classify(toy_root, tiny_config, out, *extra):
    argv = ["classify", "--data", str(toy_root), "--category", "toy", "--config", tiny_config, "--quiet",
            "--out", str(out), *extra]
    return main(argv)


def check_schema(results, aug, partitions, baseline=True):
    assert results["task"] == "classify" and results["aug"] == aug
    assert results["command"].startswith("inspect-train classify")
    assert results["manifest"].endswith("manifest.json")
    assert isinstance(results["config"], dict) and results["config"]["steps"] == 3
    assert [p["partition"] for p in results["partitions"]] == partitions
    for part in results["partitions"]:
        arms = ("baseline", "augmented") if baseline else ("augmented",)
        for arm in arms:
            metrics = part[arm]
            assert 0 <= metrics["accuracy"] <= 1
            assert set(metrics["per_class_accuracy"]) == set(metrics["classes"])
            matrix = metrics["confusion_matrix"]
            assert len(matrix) == len(metrics["classes"]) and sum(map(sum, matrix)) == metrics["n_test"]
    summary = results["summary"]
    assert set(summary["augmented"]["accuracy"]) == {"mean", "std", "n"}
    if baseline:
        assert summary["difference"]["accuracy"] == pytest.approx(
            summary["augmented"]["accuracy"]["mean"] - summary["baseline"]["accuracy"]["mean"])
    assert results["schedule"]["steps"] == 3


def test_crop_paste_two_partitions_schema_report_and_audit(toy_root, tiny_config, tmp_path):
    out = tmp_path / "run"
    assert classify(toy_root, tiny_config, out, "--aug", "crop-paste", "--partitions", "1", "2") == 0
    results = read_results(out)
    check_schema(results, "crop-paste", [1, 2])
    assert results["schedule"]["synthetic_per_batch"] == 4
    assert results["partitions"][0]["synthetic_samples_seen"] == 12
    rows = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| P")]
    assert [r.split(" |")[0] for r in rows[:2]] == ["| P1", "| P2"]
    assert "| mean ± std |" in (out / "report.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    for part, entry in zip(manifest["partitions"], results["partitions"]):
        used = {(c, n) for c, n in entry["real_images_used"]}
        base = {(d, n) for d, split in part["defects"].items() for n in split["base"]}
        assert used == base, "training saw exactly the base set, never a test image"
    assert {p.name for p in (out / "tb").iterdir()} == {"baseline-p1", "crop-paste-p1", "baseline-p2", "crop-paste-p2"}


@pytest.fixture(scope="module")
def toy32(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


@pytest.mark.parametrize("aug", ["none", "classic", "cut-paste", "perlin"])
def test_every_classic_aug_runs(toy32, tmp_path, aug):
    """The task on its own (the CLI glue is covered by the crop-paste, perlin and dfmgan runs)."""
    manifest = make_manifest(toy32.index, partitions=1, seed=0)
    settings = ClassifySettings(model="resnet18", batch_size=8, steps=2, warmup_steps=0, log_every=1,
                                save_models=False, progress=False)
    make = generator_factory(aug, toy32, torch.device("cpu"))
    entry = run_partition(toy32, manifest, 1, aug, settings, 0, torch.device("cpu"), tmp_path, make, baseline=False)
    metrics = entry["augmented"]
    assert 0 <= metrics["accuracy"] <= 1 and metrics["classes"] == ["hole", "scratch", "stain"]
    expected = 0 if aug in ("none", "classic") else 2 * 4
    assert entry.get("synthetic_samples_seen", 0) == expected
    assert (tmp_path / "tb" / f"{aug}-p1").is_dir()


def test_epochs_to_steps(toy32):
    part = get_partition(make_manifest(toy32.index, partitions=1, seed=0), 1)
    settings = ClassifySettings(batch_size=8)
    assert steps_for_epochs(1, toy32, part, settings) == 3  # 18 base images / 8 per step, rounded up
    settings.with_good = True
    assert steps_for_epochs(2, toy32, part, settings) == -(-2 * (18 + len(toy32.train_good)) // 8)


def test_dfmgan_trains_missing_generators_then_reuses_them(toy_root, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert classify(toy_root, tiny_config, out, "--aug", "dfmgan", "--partitions", "1", "--no-baseline",
                    "--backbone-steps", "2", "--threads", "1") == 0  # the CLI wins over the preset's gan_backbone_steps (1)
    said = capsys.readouterr().out
    assert "stage 1: training" in said and "stage 2: training P1 'hole'" in said
    index = json.loads((out / "generators" / "index.json").read_text())
    assert load_checkpoint(out / "generators" / index["backbone"]["checkpoint"], kind="backbone")["step"] == 2
    assert load_checkpoint(out / "generators" / index["defects"]["p1"]["hole"]["checkpoint"], kind="defect")["step"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert index["defects"]["p1"]["hole"]["base"] == sorted(manifest["partitions"][0]["defects"]["hole"]["base"])
    check_schema(read_results(out), "dfmgan", [1], baseline=False)
    assert read_results(out)["config"]["cpu_threads"] == 1
    again = tmp_path / "again"
    assert classify(toy_root, tiny_config, again, "--aug", "dfmgan", "--partitions", "1", "--no-baseline",
                    "--generators", str(out / "generators"), "--manifest", str(out / "manifest.json")) == 0
    assert "reusing P1 'hole'" in capsys.readouterr().out
    # Another split must not reuse generators trained on a different base set.
    code = classify(toy_root, tiny_config, tmp_path / "other", "--aug", "dfmgan", "--partitions", "1",
                    "--no-baseline", "--generators", str(out / "generators"), "--seed", "7")
    assert code == 2 and "another base set" in capsys.readouterr().err


def test_same_seed_same_numbers_and_with_good(toy_root, tiny_config, tmp_path):
    runs = []
    for name in ("a", "b"):
        assert classify(toy_root, tiny_config, tmp_path / name, "--aug", "perlin", "--partitions", "1",
                        "--with-good", "--seed", "3") == 0
        runs.append(read_results(tmp_path / name)["partitions"][0])
    assert runs[0]["baseline"] == runs[1]["baseline"] and runs[0]["augmented"] == runs[1]["augmented"]
    assert runs[0]["augmented"]["classes"][-1] == "good"
    assert runs[0]["augmented"]["n_test"] > 40, "test/good joins the test set"


@pytest.mark.parametrize("extra,message", [
    (["--synthetic-ratio", "1.5"], "synthetic-ratio"),
    (["--model", "no_such_net"], "timm model"),
    (["--weights", "/nonexistent/w.pth"], "weights file not found"),
    (["--partitions", "0"], "partitions"),
    (["--steps", "0"], "steps"),
    (["--threads", "0"], "threads"),
    (["--resolution", "abc"], "resolution"),
    (["--config", "no-such-preset"], "config not found"),
])
def test_bad_input_exits_2(toy_root, tiny_config, tmp_path, capsys, extra, message):
    argv = ["--aug", "none", "--partitions", "1", "--no-baseline", *extra]
    if "--config" in extra:
        code = main(["classify", "--data", str(toy_root), "--category", "toy", "--out", str(tmp_path), *argv])
    else:
        code = classify(toy_root, tiny_config, tmp_path, *argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_data_exits_2(tmp_path, capsys):
    assert main(["classify", "--aug", "none", "--data", str(tmp_path / "nope"), "--category", "x",
                 "--out", str(tmp_path / "o")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["classify", "--aug", "none", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--category" in capsys.readouterr().err
