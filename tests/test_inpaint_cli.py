"""`--aug inpaint` end to end through the CLI at tiny size: classify and segment get an inpaint arm (painters
trained once, then reused from --generators), `gan fit-inpaint` writes a painter, `generate --masks` writes one
painted image per mask with boxes, and bad input is one line with exit code 2."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import write_tiny_classify_config
from generators.inpaint.checkpoint import load_painter_checkpoint
from inspect_train.cli import main


@pytest.fixture(scope="module")
def classify_run(toy_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("inpaint-classify")
    config = write_tiny_classify_config(out / "tiny.yaml")
    code = main(["classify", "--data", str(toy_root), "--category", "toy", "--config", str(config), "--quiet",
                 "--aug", "inpaint", "--partitions", "1", "--inpaint-steps", "2", "--threads", "1",
                 "--out", str(out / "run")])
    return code, out / "run"


def test_classify_has_an_inpaint_arm(classify_run):
    code, out = classify_run
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["arms"] == ["none", "inpaint"]
    part = results["partitions"][0]
    assert part["runs"]["inpaint"]["synthetic_samples_seen"] == 3 * 4 and "inpaint" in part["tests"]
    index = json.loads((out / "generators" / "inpaint" / "index.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert index["generator"] == "inpaint" and index["config"] == "inpaint-tiny"
    for defect, split in manifest["partitions"][0]["defects"].items():
        entry = index["defects"]["p1"][defect]
        assert entry["base"] == sorted(split["base"]), "each painter saw its partition's base set only"
        state = load_painter_checkpoint(out / "generators" / "inpaint" / entry["checkpoint"])
        assert state["step"] == 2 and state["partition"] == 1 and sorted(state["base"]) == sorted(split["base"])


def _segment_with_painters(toy_root, preset, first, out, *extra):
    """A tiny segment run with an inpaint arm, reusing the painters and manifest of the classify run `first`."""
    return main(["segment", "--data", str(toy_root), "--category", "toy", "--config", preset,
                 "--partitions", "1", "--device", "cpu", "--quiet", "--steps", "2", "--aug", "inpaint",
                 "--generators", str(first / "generators"), "--manifest", str(first / "manifest.json"),
                 "--out", str(out), *extra])


def test_segment_reuses_the_painters(classify_run, toy_root, fast_presets, tmp_path, capsys):
    _, first = classify_run
    capsys.readouterr()
    code = _segment_with_painters(toy_root, fast_presets["segment"], first, tmp_path / "seg", "--inpaint-steps", "2")
    assert code == 0
    assert "reusing the P1 'hole' painter" in capsys.readouterr().out
    results = json.loads((tmp_path / "seg" / "results.json").read_text())
    assert results["arms"] == ["none", "inpaint"]
    assert results["partitions"][0]["runs"]["inpaint"]["synthetic_samples_seen"] == 2 * 8


def test_inpaint_config_flag_reuses_smaller_painters(classify_run, toy_root, fast_presets, tmp_path, capsys):
    """At 48 px the default painter is inpaint-64; --inpaint-config inpaint-tiny reuses the 32 px painters of the
    classify run instead (the online dataset resizes their samples), and config.yaml records the choice."""
    import yaml

    _, first = classify_run
    capsys.readouterr()
    code = _segment_with_painters(toy_root, fast_presets["segment"], first, tmp_path / "seg", "--inpaint-steps", "2",
                                  "--resolution", "48", "--inpaint-config", "inpaint-tiny")
    out = capsys.readouterr().out
    assert code == 0 and "(inpaint-tiny, 32x32)" in out and "reusing the P1 'hole' painter" in out
    config = yaml.safe_load((tmp_path / "seg" / "config.yaml").read_text())
    assert config["generators"]["inpaint"]["config"] == "inpaint-tiny"


def test_painters_of_other_steps_are_not_reused(classify_run, toy_root, fast_presets, tmp_path, capsys):
    """A painter trained with other steps (or another loss) is refused by name, not silently reused: the run's
    config.yaml would otherwise record a painter it did not use."""
    _, first = classify_run
    capsys.readouterr()
    code = _segment_with_painters(toy_root, fast_presets["segment"], first, tmp_path / "seg", "--inpaint-steps", "3")
    err = capsys.readouterr().err
    assert code == 2 and "trained with steps 2; this run asks for steps 3" in err and "Traceback" not in err
    code = _segment_with_painters(toy_root, fast_presets["segment"], first, tmp_path / "seg", "--inpaint-steps", "2",
                                  "--inpaint-loss", "r3gan")
    assert code == 2 and "trained with loss nsgan; this run asks for loss r3gan" in capsys.readouterr().err


def test_inpaint_loss_flag_trains_r3gan_painters(toy_root, tmp_path):
    config = write_tiny_classify_config(tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    assert main(["classify", "--data", str(toy_root), "--category", "toy", "--config", str(config), "--quiet",
                 "--aug", "inpaint", "--no-baseline", "--partitions", "1", "--steps", "1", "--inpaint-steps", "1",
                 "--inpaint-loss", "r3gan", "--threads", "1", "--out", str(out)]) == 0
    index = json.loads((out / "generators" / "inpaint" / "index.json").read_text())
    for entry in index["defects"]["p1"].values():
        assert entry["loss"] == "r3gan"
        assert load_painter_checkpoint(out / "generators" / "inpaint" / entry["checkpoint"])["loss"] == "r3gan"


def test_mask_source_flag_dfmgan_and_folder(classify_run, toy_root, tmp_path):
    """--mask-source dfmgan trains the DFMGAN generators it needs and paints into their masks; a folder paints into
    the user's masks; either way config.yaml records the source, so a rerun of it repeats the run."""
    import yaml

    _, first = classify_run
    masks = tmp_path / "masks"
    masks.mkdir()
    arr = np.zeros((32, 32), dtype=np.uint8)
    arr[10:12, 4:28] = 255
    Image.fromarray(arr).save(masks / "line.png")
    common = ["segment", "--data", str(toy_root), "--category", "toy", "--config", "segment-tiny", "--partitions",
              "1", "--device", "cpu", "--quiet", "--steps", "2", "--aug", "inpaint", "--no-baseline",
              "--inpaint-steps", "2", "--manifest", str(first / "manifest.json")]
    for source, out in (("dfmgan", tmp_path / "dfm"), (str(masks), tmp_path / "folder")):
        gens = tmp_path / f"gens-{out.name}"
        shutil.copytree(first / "generators" / "inpaint", gens / "inpaint")  # the painters, not DFMGAN
        assert main([*common, "--mask-source", source, "--generators", str(gens), "--backbone-steps", "1",
                     "--defect-steps", "1", "--out", str(out)]) == 0
        config = yaml.safe_load((out / "config.yaml").read_text())
        assert config["generators"]["inpaint"]["mask_source"] == source
        results = json.loads((out / "results.json").read_text())
        assert results["partitions"][0]["runs"]["inpaint"]["synthetic_samples_seen"] == 2 * 8
        assert (gens / "index.json").is_file() == (source == "dfmgan"), "DFMGAN trained only when its masks are used"


def test_fit_inpaint_then_generate_from_masks(toy_root, tmp_path, capsys):
    out = tmp_path / "painter"
    assert main(["gan", "fit-inpaint", "--data", str(toy_root), "--category", "toy", "--defect", "scratch",
                 "--partition", "2", "--out", str(out), "--config", "inpaint-tiny", "--steps", "2",
                 "--loss", "r3gan", "--quiet", "--threads", "1"]) == 0
    ckpt = out / "inpaint_scratch.pt"
    state = load_painter_checkpoint(ckpt)
    manifest = json.loads((out / "manifest.json").read_text())
    assert state["loss"] == "r3gan" and state["base"] == manifest["partitions"][1]["defects"]["scratch"]["base"]

    masks = tmp_path / "masks"
    masks.mkdir()
    for name, size, box in (("a.png", (32, 32), (3, 9, 2, 20)), ("b.png", (48, 64), (30, 40, 10, 50)),
                            ("c.png", (32, 32), (20, 21, 5, 28))):
        arr = np.zeros(size, dtype=np.uint8)
        arr[box[0]:box[1], box[2]:box[3]] = 255
        if name == "a.png":
            arr[25:30, 25:30] = 255  # two components: two boxes
        Image.fromarray(arr).save(masks / name)
    for fmt in ("coco", "yolo"):
        gen = tmp_path / f"gen-{fmt}"
        assert main(["generate", "--checkpoint", str(ckpt), "--masks", str(masks), "--data", str(toy_root),
                     "--category", "toy", "--out", str(gen), "--format", fmt]) == 0
        with (gen / "index.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 3 and [int(r["boxes"]) for r in rows] == [2, 1, 1]
        for row in rows:
            assert Image.open(gen / row["image"]).size == (32, 32) and (gen / row["good"]).is_file()
        meta = json.loads((gen / "generate.json").read_text())
        assert meta["mask_files"] == ["a.png", "b.png", "c.png"] and meta["generator"] == "inpaint"
        if fmt == "coco":
            assert len(json.loads((gen / "annotations.json").read_text())["annotations"]) == 4
        else:
            assert len((gen / "labels" / "scratch_000000.txt").read_text().splitlines()) == 2
    # Without --masks: --n deformed copies of the base masks the painter was trained with.
    assert main(["generate", "--checkpoint", str(ckpt), "--n", "3", "--data", str(toy_root), "--category", "toy",
                 "--out", str(tmp_path / "gen-n")]) == 0
    assert len((tmp_path / "gen-n" / "index.csv").read_text().splitlines()) == 1 + 3


@pytest.mark.parametrize("argv,message", [
    (["generate", "--masks", "{empty}", "--data", "{data}", "--category", "toy", "--out", "{tmp}/o"], "no mask PNGs"),
    (["generate", "--masks", "{empty}", "--out", "{tmp}/o"], "--data and --category"),
    (["gan", "fit-inpaint", "--data", "{data}", "--category", "toy", "--defect", "dent", "--partition", "1",
      "--out", "{tmp}/o", "--config", "inpaint-tiny"], "no defect type 'dent'"),
    (["gan", "fit-inpaint", "--data", "{data}", "--category", "toy", "--defect", "hole", "--partition", "1",
      "--out", "{tmp}/o", "--config", "inpaint-nope"], "config not found"),
    (["classify", "--data", "{data}", "--category", "toy", "--aug", "inpaint", "--inpaint-config", "inpaint-nope",
      "--out", "{tmp}/o", "--partitions", "1", "--quiet"], "config not found"),
    (["classify", "--data", "{data}", "--category", "toy", "--aug", "inpaint", "--inpaint-steps", "-1",
      "--out", "{tmp}/o", "--partitions", "1", "--quiet"], "--inpaint-steps"),
    (["segment", "--data", "{data}", "--category", "toy", "--aug", "inpaint", "--mask-source", "{tmp}/nowhere",
      "--out", "{tmp}/o", "--partitions", "1", "--quiet"], "not base, dfmgan or a folder"),
    (["segment", "--data", "{data}", "--category", "toy", "--aug", "inpaint", "--mask-source", "{empty}",
      "--out", "{tmp}/o", "--partitions", "1", "--quiet"], "no mask PNGs"),
])
def test_bad_input_is_one_line_exit_2(toy_root, tmp_path, capsys, argv, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    fill = {"empty": str(empty), "data": str(toy_root), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    if argv[0] == "generate":
        argv[1:1] = ["--checkpoint", str(_painter(toy_root, tmp_path))]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _painter(toy_root, tmp_path):
    out = tmp_path / "p"
    assert main(["gan", "fit-inpaint", "--data", str(toy_root), "--category", "toy", "--defect", "hole",
                 "--partition", "1", "--out", str(out), "--config", "inpaint-tiny", "--steps", "0", "--quiet"]) == 0
    return out / "inpaint_hole.pt"


def test_unknown_loss_is_rejected_by_argparse(toy_root, tmp_path, capsys):
    code = main(["gan", "fit-inpaint", "--data", str(toy_root), "--category", "toy", "--defect", "hole",
                 "--partition", "1", "--out", str(tmp_path), "--loss", "wgan"])
    assert code == 2 and "invalid choice: 'wgan'" in capsys.readouterr().err
