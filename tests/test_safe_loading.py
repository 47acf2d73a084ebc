"""No code runs from a file the project reads: a crafted pickle (its __reduce__ creates a marker file) placed
wherever a command reads a checkpoint or a weights file is refused with one line and exit code 2, and the
marker never appears."""

from __future__ import annotations

import shutil

import pytest
import torch

from inspect_train.cli import main


class Payload:
    """What an attacker's checkpoint holds: unpickling it calls open(marker, "w")."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted(path, marker, kind: str = "dfmgan-defect"):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": kind, "defect_type": "hole", "weights": torch.zeros(2), "payload": Payload(str(marker))},
               path)
    return path


@pytest.fixture(scope="module")
def finished_run(toy_root, tiny_config, tmp_path_factory):
    """A finished classify run (real-only arm, P1) whose arm --resume reads back."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["classify", "--data", str(toy_root), "--category", "toy", "--config", tiny_config, "--aug", "none",
                 "--partitions", "1", "--quiet", "--out", str(out)]) == 0
    return out


def cases(toy_root, tmp, marker, finished_run):
    data = ["--data", str(toy_root), "--category", "toy"]
    bad = crafted(tmp / "bad.pt", marker)
    painter_out = tmp / "painter"
    crafted(painter_out / "inpaint_hole.pt", marker, kind="inpaint-painter")
    gan_out = tmp / "gan"
    crafted(gan_out / "backbone.pt", marker, kind="dfmgan-backbone")
    resumed = tmp / "resumed"
    shutil.copytree(finished_run, resumed)
    crafted(resumed / "P1" / "none" / "finished.pt", marker)
    return {
        "generate": ["generate", "--checkpoint", str(bad), "--n", "2", "--out", str(tmp / "o")],
        "evaluate-gen checkpoint": ["evaluate-gen", "--aug", "dfmgan", *data, "--partition", "1", "--defect", "hole",
                                    "--checkpoint", f"hole={bad}", "--n", "4", "--out", str(tmp / "e")],
        "evaluate-gen inception": ["evaluate-gen", "--aug", "crop-paste", *data, "--partition", "1", "--defect",
                                   "hole", "--n", "4", "--inception-weights", str(bad), "--out", str(tmp / "e2")],
        "fit-defect backbone": ["gan", "fit-defect", "--backbone", str(bad), *data, "--defect", "hole",
                                "--partition", "1", "--out", str(tmp / "d"), "--quiet"],
        "fit-backbone resume": ["gan", "fit-backbone", *data, "--config", "dfmgan-tiny", "--steps", "1", "--resume",
                                "--out", str(gan_out), "--quiet"],
        "fit-inpaint resume": ["gan", "fit-inpaint", *data, "--defect", "hole", "--partition", "1", "--config",
                               "inpaint-tiny", "--steps", "1", "--resume", "--out", str(painter_out), "--quiet"],
        "classify resume": ["classify", *data, "--config", str(finished_run / "config.yaml"), "--aug", "none",
                            "--partitions", "1", "--quiet", "--out", str(resumed), "--resume"],
        "classify weights": ["classify", *data, "--aug", "none", "--partitions", "1", "--steps", "1", "--weights",
                             str(bad), "--quiet", "--out", str(tmp / "w")],
        "predict": ["predict", "--model", str(bad), "--images", str(toy_root / "toy" / "test" / "hole"),
                    "--out", str(tmp / "p")],
        "export": ["export", "--model", str(bad), "--format", "torchscript", "--out", str(tmp / "x.pt")],
    }


@pytest.mark.parametrize("case", ["generate", "evaluate-gen checkpoint", "evaluate-gen inception",
                                  "fit-defect backbone", "fit-backbone resume", "fit-inpaint resume",
                                  "classify resume", "classify weights", "predict", "export"])
def test_a_crafted_pickle_runs_nothing(toy_root, finished_run, tmp_path, capsys, case):
    marker = tmp_path / "marker"
    argv = cases(toy_root, tmp_path, marker, finished_run)[case]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert not marker.exists(), "the file's code ran"
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_the_crafted_file_would_run_code_if_unpickled_unsafely(tmp_path):
    """The payload is real: torch's unrestricted unpickler does create the marker."""
    marker = tmp_path / "marker"
    torch.load(crafted(tmp_path / "bad.pt", marker), weights_only=False)
    assert marker.exists()


def test_a_checkpoint_of_a_newer_format_is_named(tmp_path, capsys):
    from inspect_train.checkpoint import VERSION

    path = tmp_path / "new.pt"
    torch.save({"kind": "dfmgan-defect", "checkpoint_version": VERSION + 1}, path)
    assert main(["generate", "--checkpoint", str(path), "--n", "2", "--out", str(tmp_path / "o")]) == 2
    assert "is newer than this inspect-train reads" in capsys.readouterr().err


def foreign_cases(toy_root, tmp, finished_run):
    """Files that load safely but are not what the command needs: another kind, our kind without its contents,
    weights that fit no network, a list where a finished arm belongs."""
    data = ["--data", str(toy_root), "--category", "toy"]
    files = {"plain": {"a": 1}, "list": [1, 2],
             "incomplete defect": {"kind": "dfmgan-defect"},
             "incomplete backbone": {"kind": "dfmgan-backbone"},
             "wrong weights": {"kind": "inpaint-painter", "config": {"resolution": 32}, "channels": 3,
                               "resolution": 32, "defect_type": "hole", "painter_ema": {"x": torch.zeros(2)}}}
    paths = {}
    for name, content in files.items():
        paths[name] = tmp / (name.replace(" ", "_") + ".pt")
        torch.save(content, paths[name])
    resumed = tmp / "resumed"
    shutil.copytree(finished_run, resumed)
    torch.save([1, 2], resumed / "P1" / "none" / "finished.pt")
    out = tmp / "new"
    rows = []
    for name in ("plain", "list", "incomplete defect", "wrong weights"):
        rows.append((f"generate {name}", ["generate", "--checkpoint", str(paths[name]), *data, "--n", "2",
                                          "--out", str(out)]))
        rows.append((f"evaluate-gen {name}", ["evaluate-gen", "--aug", "inpaint", "dfmgan", *data, "--partition", "1",
                                              "--defect", "hole", "--checkpoint", f"hole={paths[name]}", "--n", "4",
                                              "--out", str(out)]))
    for name in ("plain", "list", "incomplete backbone"):
        rows.append((f"fit-defect {name}", ["gan", "fit-defect", "--backbone", str(paths[name]), *data, "--defect",
                                            "hole", "--partition", "1", "--out", str(out), "--quiet"]))
        rows.append((f"predict {name}", ["predict", "--model", str(paths[name]), "--images",
                                         str(toy_root / "toy" / "test" / "hole"), "--out", str(out)]))
        rows.append((f"export {name}", ["export", "--model", str(paths[name]), "--format", "onnx", "--out",
                                        str(out / "m.onnx")]))
    rows.append(("classify resume list", ["classify", *data, "--config", str(finished_run / "config.yaml"), "--aug",
                                          "none", "--partitions", "1", "--quiet", "--out", str(resumed), "--resume"]))
    return rows


def test_a_foreign_file_is_one_line_and_writes_nothing(toy_root, finished_run, tmp_path, capsys):
    failures = []
    for name, argv in foreign_cases(toy_root, tmp_path, finished_run):
        capsys.readouterr()
        try:
            code = main(argv)
        except Exception as err:  # noqa: BLE001 - collected, every row reported at once
            failures.append(f"{name}: {type(err).__name__}: {err}")
            continue
        err = capsys.readouterr().err.strip()
        if code != 2 or len(err.splitlines()) != 1 or (tmp_path / "new").exists():
            failures.append(f"{name}: exit {code}, {err!r}")
    assert not failures, "\n".join(failures)
