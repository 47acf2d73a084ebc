"""A refused command touches nothing: every input is checked before a folder, manifest or config is written, so a
refused --resume leaves the run byte for byte as it was and a refused new run leaves no folder. A run folder is
portable: copied elsewhere, with its data moved, it resumes to the same numbers; arms trained by separate commands,
one of them with its own --generators folder, assemble into one report with their paired tests."""

import shutil

import pytest

from inspect_train.cli import main
from inspect_train.report import read_results


def files_of(folder):
    """Every file under `folder`: relative name -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def classify(data, tiny_config, out, *argv, task="classify") -> int:
    return main([task, "--data", str(data), "--category", "toy", "--config", tiny_config, "--partitions", "1",
                 "--quiet", "--device", "cpu", "--out", str(out), *argv])


@pytest.fixture(scope="module")
def assembled(toy_root, tiny_config, tmp_path_factory):
    """The painter arm (its generators in a folder of its own) and the baseline as two commands into one --out,
    assembled by a third with --resume."""
    work = tmp_path_factory.mktemp("assembled")
    run, painters = work / "run", work / "painters"
    assert classify(toy_root, tiny_config, run, "--aug", "inpaint", "--no-baseline", "--generators", str(painters),
                    "--inpaint-steps", "1") == 0
    assert classify(toy_root, tiny_config, run, "--aug", "none") == 0
    assert classify(toy_root, tiny_config, run, "--aug", "inpaint", "--inpaint-steps", "1", "--resume") == 0
    return run, read_results(run)


def test_arms_of_separate_commands_assemble_with_their_paired_tests(assembled):
    _, results = assembled
    part = results["partitions"][0]
    assert set(part["arms"]) == {"none", "inpaint"}
    assert all(part["runs"][arm]["read_back"] for arm in ("none", "inpaint"))
    assert "inpaint" in part["tests"] and part["tests"]["inpaint"]


def test_a_copied_run_with_moved_data_resumes_to_the_same_numbers(assembled, toy_root, tiny_config, tmp_path,
                                                                  capsys):
    run, results = assembled
    copy, data = tmp_path / "elsewhere" / "run", tmp_path / "moved-data"
    shutil.copytree(run, copy)
    shutil.copytree(toy_root, data)
    capsys.readouterr()
    assert classify(data, tiny_config, copy, "--aug", "inpaint", "--inpaint-steps", "1", "--resume") == 0
    assert "2 finished arm(s)" in capsys.readouterr().out
    again = read_results(copy)
    assert again["partitions"][0]["arms"] == results["partitions"][0]["arms"]
    assert again["partitions"][0]["tests"] == results["partitions"][0]["tests"]
    assert again["summary"] == results["summary"]


def test_changed_data_is_not_taken_for_the_same(assembled, toy_root, tiny_config, tmp_path, capsys):
    run, _ = assembled
    copy, data = tmp_path / "run", tmp_path / "changed-data"
    shutil.copytree(run, copy)
    shutil.copytree(toy_root, data)
    image = sorted((data / "toy" / "train" / "good").iterdir())[0]
    image.write_bytes(sorted((data / "toy" / "train" / "good").iterdir())[1].read_bytes())
    before = files_of(copy)
    assert classify(data, tiny_config, copy, "--aug", "none", "--resume") == 2
    assert "data:" in capsys.readouterr().err
    assert files_of(copy) == before


@pytest.fixture(scope="module")
def finished_run(toy_root, tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert classify(toy_root, tiny_config, out, "--aug", "crop-paste") == 0
    return out


REFUSED_RESUMES = {
    "other steps": ["--aug", "crop-paste", "--resume", "--steps", "4"],
    "another task": ["--aug", "crop-paste", "--resume", "TASK=segment"],
    "missing manifest": ["--aug", "crop-paste", "--resume", "--manifest", "MISSING"],
    "bad generator config": ["--aug", "crop-paste", "dfmgan", "--resume", "--gan-config", "no-such-config"],
    "bad painter config": ["--aug", "crop-paste", "inpaint", "--resume", "--inpaint-config", "no-such-config"],
    "missing weights": ["--aug", "crop-paste", "--resume", "--weights", "MISSING"],
    "unknown model": ["--aug", "crop-paste", "--resume", "--model", "no-such-net"],
    "missing partition": ["--aug", "crop-paste", "--resume", "--partitions", "1", "9", "--manifest", "RUN"],
}


@pytest.mark.parametrize("case", sorted(REFUSED_RESUMES))
def test_a_refused_resume_leaves_the_run_byte_identical(case, finished_run, toy_root, tiny_config, tmp_path,
                                                        capsys):
    argv = [str(tmp_path / "missing.json") if a == "MISSING" else str(finished_run / "manifest.json") if a == "RUN"
            else a for a in REFUSED_RESUMES[case]]
    task = next((a.split("=")[1] for a in argv if a.startswith("TASK=")), "classify")
    argv = [a for a in argv if not a.startswith("TASK=")]
    before = files_of(finished_run)
    assert classify(toy_root, tiny_config, finished_run, *argv, task=task) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert files_of(finished_run) == before


def write_bad_manifest(path):
    path.write_text("{not json")
    return str(path)


REFUSED_NEW_RUNS = {
    "bad manifest": ("classify", ["--manifest", "BAD"]),
    "missing manifest": ("classify", ["--manifest", "MISSING"]),
    "missing partition": ("classify", ["--partitions", "9", "--manifest", "SPLIT"]),
    "bad generator config": ("classify", ["--aug", "dfmgan", "--gan-config", "no-such-config"]),
    "bad painter config": ("classify", ["--aug", "inpaint", "--inpaint-config", "no-such-config"]),
    "missing weights": ("classify", ["--weights", "MISSING"]),
    "unknown encoder": ("segment", ["--encoder", "no-such-encoder"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED_NEW_RUNS))
@pytest.mark.parametrize("data", ["given", "toy"])
def test_a_refused_new_run_leaves_no_folder(case, data, toy_root, tiny_config, tmp_path, capsys):
    task, argv = REFUSED_NEW_RUNS[case]
    if data == "toy" and task != "classify":
        pytest.skip("one toy case per kind is enough")
    split = tmp_path / "split.json"  # a run without --data uses the same toy data as toy_root
    assert main(["data", "split", "--data", str(toy_root), "--category", "toy", "--out", str(split)]) == 0
    argv = [write_bad_manifest(tmp_path / "bad.json") if a == "BAD" else
            str(tmp_path / "missing.json") if a == "MISSING" else str(split) if a == "SPLIT" else a for a in argv]
    out = tmp_path / "new" / "run"
    config = [] if task != "classify" else ["--config", tiny_config]
    where = ["--data", str(toy_root), "--category", "toy"] if data == "given" else []
    code = main([task, *where, *config, "--partitions", "1", "--quiet", "--device", "cpu", "--out", str(out), *argv]
                if "--partitions" not in argv else
                [task, *where, *config, "--quiet", "--device", "cpu", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "new").exists()


def fit_inpaint(toy_root, out, *argv) -> int:
    return main(["gan", "fit-inpaint", "--data", str(toy_root), "--category", "toy", "--defect", "hole",
                 "--partition", "1", "--config", "inpaint-tiny", "--steps", "1", "--quiet", "--device", "cpu",
                 "--out", str(out), *argv])


def fit_backbone(toy_root, out, *argv) -> int:
    return main(["gan", "fit-backbone", "--data", str(toy_root), "--category", "toy", "--config", "dfmgan-tiny",
                 "--steps", "1", "--quiet", "--device", "cpu", "--out", str(out), *argv])


@pytest.mark.parametrize("fit", [fit_inpaint, fit_backbone], ids=["fit-inpaint", "fit-backbone"])
def test_fit_without_resume_on_a_trained_folder_is_refused(fit, toy_root, tmp_path, capsys):
    out = tmp_path / "trained"
    assert fit(toy_root, out) == 0
    before = files_of(out)
    capsys.readouterr()
    assert fit(toy_root, out) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and err.count("\n") == 1
    assert files_of(out) == before
    assert fit(toy_root, out, "--resume", "--overwrite") == 2
    assert files_of(out) == before
    assert fit(toy_root, out, "--overwrite") == 0


def test_a_refused_fit_leaves_no_folder(toy_root, tmp_path, capsys):
    out = tmp_path / "new" / "painter"
    assert fit_inpaint(toy_root, out, "--manifest", write_bad_manifest(tmp_path / "bad.json")) == 2
    assert fit_inpaint(toy_root, out, "--partition", "9") == 2
    assert not (tmp_path / "new").exists()
