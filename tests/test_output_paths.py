"""Every command that writes refuses a bad output place (an existing file where a folder is expected, a parent
that is a file, a place it cannot write) in one line with exit code 2, before it reads or trains anything."""

import os
import stat

import pytest

from inspect_train.cli import main


def unwritable_folder(tmp_path):
    """A folder this process cannot write in: a read-only one, or /sys for root (which ignores file modes)."""
    if os.geteuid() == 0:
        if not os.path.isdir("/sys"):
            pytest.skip("root without /sys: no unwritable place to test")
        return "/sys"
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return str(folder)


# command -> the arguments before --out, and whether --out names a folder (else a file)
COMMANDS = {
    "classify": (["classify", "--data", "D", "--category", "toy"], True),
    "segment": (["segment", "--data", "D", "--category", "toy"], True),
    "detect": (["detect", "--data", "D", "--category", "toy"], True),
    "data toy": (["data", "toy"], True),
    "data split": (["data", "split", "--data", "D", "--category", "toy"], False),
    "gan fit-backbone": (["gan", "fit-backbone", "--data", "D", "--category", "toy", "--config", "dfmgan-tiny"], True),
    "gan fit-defect": (["gan", "fit-defect", "--backbone", "B.pt", "--data", "D", "--category", "toy", "--defect",
                        "hole", "--partition", "1"], True),
    "gan fit-inpaint": (["gan", "fit-inpaint", "--data", "D", "--category", "toy", "--defect", "hole", "--partition",
                         "1", "--config", "inpaint-tiny"], True),
    "generate": (["generate", "--checkpoint", "C.pt"], True),
    "evaluate-gen": (["evaluate-gen", "--data", "D", "--category", "toy", "--partition", "1", "--aug", "crop-paste"],
                     True),
    "predict": (["predict", "--model", "M.pt", "--images", "I"], True),
    "export": (["export", "--model", "M.pt", "--format", "onnx"], False),
}
PLACES = ["existing file", "under a file", "unwritable"]


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_output_place_is_one_line(command, place, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, is_folder = COMMANDS[command]
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    if place == "existing file":
        if not is_folder:
            pytest.skip("a file output may replace an existing file")
        out = str(afile)
    elif place == "under a file":
        out = str(afile / "sub" / ("out" if is_folder else "out.json"))
    else:
        out = os.path.join(unwritable_folder(tmp_path), "inspect-train-out", *([] if is_folder else ["out.json"]))
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([*argv, "--out", out])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and "--out" in err, err
    assert afile.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_output_file_given_a_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code = main(["data", "split", "--data", "D", "--category", "toy", "--out", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and "is a folder" in err and "Traceback" not in err


def test_a_write_error_later_on_is_one_line(tmp_path, monkeypatch, capsys):
    """A place that becomes unwritable after the checks (a full disk, a mount gone read-only) is one line too."""
    import errno

    def full_disk(out, seed=0):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "toy"))

    monkeypatch.setattr("inspect_train.commands.data.write_toy_dataset", full_disk)
    code = main(["data", "toy", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"inspect-train: error: cannot write {tmp_path / 'x' / 'toy'}: No space left on device\n"
