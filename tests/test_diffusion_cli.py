"""`--aug diffusion` end to end through the CLI at tiny size: classify with the baseline and the other painter in
the same command, segment reusing the painters (and refusing ones trained with other steps), the shared
--mask-source flag, `gan fit-diffusion` then `generate` (--masks and --n), evaluate-gen next to the other sources,
and bad input as one line with exit code 2."""

import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import write_tiny_classify_config
from generators.diffusion.checkpoint import load_painter_checkpoint
from inspect_train.cli import main


@pytest.fixture(scope="module")
def classify_run(toy_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion-classify")
    config = write_tiny_classify_config(out / "tiny.yaml")
    code = main(["classify", "--data", str(toy_root), "--category", "toy", "--config", str(config), "--quiet",
                 "--aug", "crop-paste", "diffusion", "--partitions", "1", "--diffusion-train-steps", "2",
                 "--threads", "1", "--out", str(out / "run")])
    return code, out / "run"


def test_classify_has_a_diffusion_arm_next_to_the_baseline(classify_run):
    code, out = classify_run
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["arms"] == ["none", "crop-paste", "diffusion"]
    part = results["partitions"][0]
    assert part["runs"]["diffusion"]["synthetic_samples_seen"] == 3 * 4 and "diffusion" in part["tests"]
    index = json.loads((out / "generators" / "diffusion" / "index.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert index["generator"] == "diffusion" and index["config"] == "diffusion-tiny"
    for defect, split in manifest["partitions"][0]["defects"].items():
        entry = index["defects"]["p1"][defect]
        assert entry["base"] == sorted(split["base"]), "each painter saw its partition's base set only"
        state = load_painter_checkpoint(out / "generators" / "diffusion" / entry["checkpoint"])
        assert state["step"] == 2 and state["partition"] == 1 and sorted(state["base"]) == sorted(split["base"])
        assert not set(state["base"]) & set(split["test"])


def _segment(toy_root, preset, first, out, *extra):
    return main(["segment", "--data", str(toy_root), "--category", "toy", "--config", preset, "--partitions", "1",
                 "--device", "cpu", "--quiet", "--steps", "2", "--aug", "diffusion", "--threads", "1",
                 "--generators", str(first / "generators"), "--manifest", str(first / "manifest.json"),
                 "--out", str(out), *extra])


def test_segment_reuses_the_painters_and_refuses_other_steps(classify_run, toy_root, fast_presets, tmp_path, capsys):
    _, first = classify_run
    capsys.readouterr()
    assert _segment(toy_root, fast_presets["segment"], first, tmp_path / "seg", "--diffusion-train-steps", "2",
                    "--diffusion-steps", "1") == 0
    assert "reusing the P1 'hole' diffusion painter" in capsys.readouterr().out
    results = json.loads((tmp_path / "seg" / "results.json").read_text())
    assert results["arms"] == ["none", "diffusion"]
    assert results["partitions"][0]["runs"]["diffusion"]["synthetic_samples_seen"] == 2 * 8
    config = yaml.safe_load((tmp_path / "seg" / "config.yaml").read_text())
    assert config["generators"]["diffusion"]["sample_steps"] == 1
    code = _segment(toy_root, fast_presets["segment"], first, tmp_path / "seg3", "--diffusion-train-steps", "3")
    err = capsys.readouterr().err
    assert code == 2 and "trained with steps 2; this run asks for steps 3" in err and "Traceback" not in err


def test_mask_source_is_one_flag_for_both_painters(classify_run, toy_root, fast_presets, tmp_path):
    """--mask-source DIR, given once, sets where both painters paint (the same flag, the same meaning)."""
    _, first = classify_run
    masks = tmp_path / "masks"
    masks.mkdir()
    arr = np.zeros((32, 32), dtype=np.uint8)
    arr[10:12, 4:28] = 255
    Image.fromarray(arr).save(masks / "line.png")
    out = tmp_path / "folder"
    assert _segment(toy_root, fast_presets["segment"], first, out, "--diffusion-train-steps", "2", "--no-baseline",
                    "--mask-source", str(masks)) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["generators"]["diffusion"]["mask_source"] == str(masks)
    assert config["generators"]["inpaint"]["mask_source"] == str(masks)


def test_fit_diffusion_resume_then_generate(toy_root, tmp_path, capsys):
    out = tmp_path / "painter"
    common = ["gan", "fit-diffusion", "--data", str(toy_root), "--category", "toy", "--defect", "scratch",
              "--partition", "2", "--out", str(out), "--config", "diffusion-tiny", "--quiet", "--threads", "1"]
    assert main([*common, "--steps", "2"]) == 0
    ckpt = out / "diffusion_scratch.pt"
    manifest = json.loads((out / "manifest.json").read_text())
    assert load_painter_checkpoint(ckpt)["base"] == manifest["partitions"][1]["defects"]["scratch"]["base"]
    capsys.readouterr()
    assert main([*common, "--steps", "3"]) == 2 and "--resume" in capsys.readouterr().err
    assert main([*common, "--steps", "3", "--resume", "--manifest", str(out / "manifest.json")]) == 0
    assert load_painter_checkpoint(ckpt)["step"] == 3

    masks = tmp_path / "masks"
    masks.mkdir()
    for name, size, box in (("a.png", (32, 32), (3, 9, 2, 20)), ("b.png", (48, 64), (30, 40, 10, 50))):
        arr = np.zeros(size, dtype=np.uint8)
        arr[box[0]:box[1], box[2]:box[3]] = 255
        Image.fromarray(arr).save(masks / name)
    gen = tmp_path / "gen"
    assert main(["generate", "--checkpoint", str(ckpt), "--masks", str(masks), "--data", str(toy_root),
                 "--category", "toy", "--out", str(gen), "--diffusion-steps", "1"]) == 0
    with (gen / "index.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for row in rows:
        assert Image.open(gen / row["image"]).size == (32, 32) and (gen / row["good"]).is_file()
    meta = json.loads((gen / "generate.json").read_text())
    assert meta["generator"] == "diffusion" and meta["options"] == {"sample_steps": 1}
    assert meta["info"]["scratch"]["sample_steps"] == 1
    assert main(["generate", "--checkpoint", str(ckpt), "--n", "3", "--data", str(toy_root), "--category", "toy",
                 "--out", str(tmp_path / "gen-n")]) == 0
    assert len((tmp_path / "gen-n" / "index.csv").read_text().splitlines()) == 1 + 3


def test_evaluate_gen_scores_the_painters_next_to_the_others(classify_run, toy_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no KID/LPIPS weights: skipped
    _, first = classify_run
    out = tmp_path / "eval"
    assert main(["evaluate-gen", "--aug", "crop-paste", "diffusion", "--generators", str(first / "generators"),
                 "--manifest", str(first / "manifest.json"), "--data", str(toy_root), "--category", "toy",
                 "--partition", "1", "--n", "8", "--diffusion-steps", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    source = next(s for s in results["sources"] if s["name"] == "diffusion")
    assert source["kind"] == "diffusion" and source["resolution"] == 32 and source["sample_steps"] == 1
    for entry in results["defects"].values():
        assert [r["source"] for r in entry["rows"]] == ["real base set", "crop-paste", "diffusion"]
        assert entry["rows"][2]["n"] == 8


@pytest.mark.parametrize("argv,message", [
    (["gan", "fit-diffusion", "--data", "{data}", "--category", "toy", "--defect", "hole", "--partition", "1",
      "--out", "{tmp}/o", "--config", "diffusion-nope"], "config not found"),
    (["classify", "--data", "{data}", "--category", "toy", "--aug", "diffusion", "--diffusion-config", "diffusion-nope",
      "--out", "{tmp}/o", "--partitions", "1", "--quiet"], "config not found"),
    (["classify", "--data", "{data}", "--category", "toy", "--aug", "diffusion", "--diffusion-steps", "0",
      "--out", "{tmp}/o", "--partitions", "1", "--quiet"], "--diffusion-steps"),
    (["segment", "--data", "{data}", "--category", "toy", "--aug", "diffusion", "--mask-source", "{tmp}/nowhere",
      "--out", "{tmp}/o", "--partitions", "1", "--quiet"], "not base, dfmgan or a folder"),
])
def test_bad_input_is_one_line_exit_2(toy_root, tmp_path, capsys, argv, message):
    argv = [a.format(data=str(toy_root), tmp=str(tmp_path)) for a in argv]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
