"""`inspect-train segment` end to end on the toy dataset at the tiny preset (32x32, few steps)."""

import json
import math
from pathlib import Path

import pytest
import torch

from inspect_train.cli import main
from inspect_train.metrics.segmentation import METRIC_KEYS
from inspect_train.online import Batch
from inspect_train.models.segmenters import paired_targets


def _run(tmp_path, toy_root, *extra, name="run", config="segment-tiny"):
    out = tmp_path / name
    code = main(["segment", "--data", str(toy_root), "--category", "toy", "--config", config,
                 "--partitions", "1", "--device", "cpu", "--quiet", "--out", str(out), *extra])
    return code, out


def _check_results(out, aug):
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "segment" and results["arms"] == ["none", aug]
    assert results["metrics"] == list(METRIC_KEYS) and results["headline"] == "pixel_ap"
    assert results["schedule"]["steps"] > 0
    assert (out / "report.md").read_text().count(f"| {aug} |") == len(METRIC_KEYS) + 1  # + the tests table row
    part = results["partitions"][0]
    assert part["partition"] == 1
    for arm in ("none", aug):
        assert set(part["arms"][arm]) == set(METRIC_KEYS)
        for key, value in part["arms"][arm].items():
            assert 0.0 <= value <= 1.0, (arm, key, value)
        assert set(results["summary"]["arms"][arm]) == set(METRIC_KEYS)
        assert (out / "P1" / arm / "model.pt").is_file() and (out / "P1" / arm / "predictions.csv").is_file()
        assert list((out / "tb" / "P1" / arm).glob("events.out.tfevents.*"))
    assert set(results["summary"]["difference"][aug]) == set(METRIC_KEYS)
    for key, test in part["tests"][aug].items():  # paired bootstrap against real-only on the same images
        assert test["test"] == "paired_bootstrap" and test["low"] <= test["high"], key
        assert test["difference"] == pytest.approx(part["arms"][aug][key] - part["arms"]["none"][key], abs=1e-6)
    assert part["runs"][aug]["synthetic_samples_seen"] == results["schedule"]["steps"] * 8  # half of a batch of 16
    # Protocol: no test image of the partition was ever trained on.
    manifest = json.loads((out / "manifest.json").read_text())
    test_names = {(t, n) for t, split in manifest["partitions"][0]["defects"].items() for n in split["test"]}
    used = {tuple(item) for item in part["real_images_used"]}
    assert used and not used & test_names
    return results


@pytest.mark.parametrize("model", ["unet", "deeplabv3", "draem"])
def test_each_model_tiny(tmp_path, toy_root, fast_presets, model):
    code, out = _run(tmp_path, toy_root, "--model", model, "--aug", "perlin", "--steps", "4",
                     config=fast_presets["segment"])
    assert code == 0
    _check_results(out, "perlin")


def test_unet_learns_the_toy_defects(tmp_path, toy_root, fast_presets):
    code, out = _run(tmp_path, toy_root, "--model", "unet", "--aug", "crop-paste", "--steps", "30",
                     config=fast_presets["segment"])
    assert code == 0
    part = _check_results(out, "crop-paste")["partitions"][0]
    for arm in ("none", "crop-paste"):  # chance is 0.5; the toy defects are plain to see
        assert part["arms"][arm]["pixel_auroc"] > 0.85, part["arms"][arm]
        assert part["arms"][arm]["pixel_ap"] > 0.3, part["arms"][arm]


def test_same_seed_same_numbers(tmp_path, toy_root, fast_presets):
    runs = [_run(tmp_path, toy_root, "--model", "draem", "--aug", "cut-paste", "--steps", "5", name=f"r{i}",
                 config=fast_presets["segment"]) for i in range(2)]
    first, second = (json.loads((out / "results.json").read_text())["partitions"][0] for _, out in runs)
    assert first["arms"] == second["arms"] and first["tests"] == second["tests"]


def test_no_data_runs_on_toy_with_baseline_only(tmp_path):
    out = tmp_path / "toy"
    code = main(["segment", "--aug", "none", "--model", "unet", "--steps", "3", "--partitions", "2",
                 "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "toy-data" / "toy" / "train" / "good").is_dir()
    assert results["config"]["run"]["resolution"] == [32, 32] and results["config"]["run"]["preset"] == "segment-tiny"
    part = results["partitions"][0]
    assert part["partition"] == 2 and list(part["arms"]) == ["none"] and set(part["arms"]["none"]) == set(METRIC_KEYS)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "/nonexistent/folder", "--category", "toy"], "data folder not found"),
        (["--resolution", "30"], "multiple of 8"),
        (["--aug", "none", "--no-baseline"], "cannot go with --no-baseline"),
        (["--model", "segformer"], "unknown segmenter"),
        (["--weights", "/nonexistent/w.pt"], "weights file not found"),
        (["--config", "segment-nope"], "segment config not found"),
        (["--steps", "0"], "steps must be a positive integer"),
    ],
)
def test_bad_input_exits_2(tmp_path, toy_root, capsys, extra, message):
    args = ["segment", "--model", "unet", "--config", "segment-tiny", "--out", str(tmp_path / "bad"), "--device", "cpu", "--quiet",
            "--partitions", "1"]
    if "--data" not in extra:
        args += ["--data", str(toy_root), "--category", "toy"]
    code = main(args + extra)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("edit,message", [
    (("generators:", "generator_options:"), "'generator_options' is now 'generators'"),
    (("lr:", "gan_config: dfmgan-tiny\nlr:"), "'gan_config' is now 'generators.dfmgan.config'"),
    (("lr:", "inpaint_steps: 3\nlr:"), "'inpaint_steps' is now 'generators.inpaint.steps'"),
])
def test_old_preset_key_is_named(tmp_path, toy_root, capsys, edit, message):
    """A preset that still uses an old key name is refused by name, not silently ignored."""
    preset = tmp_path / "old.yaml"
    text = (Path(__file__).resolve().parents[1] / "configs" / "segment-tiny.yaml").read_text()
    assert edit[0] in text
    preset.write_text(text.replace(edit[0], edit[1], 1))
    code = main(["segment", "--data", str(toy_root), "--category", "toy", "--config", str(preset), "--aug", "dfmgan",
                 "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_unknown_generator_option_is_named(tmp_path, toy_root, capsys):
    preset = tmp_path / "typo.yaml"
    text = (Path(__file__).resolve().parents[1] / "configs" / "segment-tiny.yaml").read_text()
    preset.write_text(text.replace("perlin: {texture: good}", "perlin: {textur: good}", 1))
    code = main(["segment", "--data", str(toy_root), "--category", "toy", "--config", str(preset), "--out",
                 str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "generators.perlin: unknown option(s) textur" in err and len(err.strip().splitlines()) == 1


def test_unknown_preset_key_is_named(tmp_path, toy_root, capsys):
    preset = tmp_path / "typo.yaml"
    preset.write_text("steps: 3\nbatchsize: 8\n")
    code = main(["segment", "--data", str(toy_root), "--category", "toy", "--config", str(preset), "--out",
                 str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown key(s) batchsize" in err


def test_bad_weights_file_is_one_line(tmp_path, toy_root, capsys):
    junk = tmp_path / "junk.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, junk)
    code, _ = _run(tmp_path, toy_root, "--model", "unet", "--weights", str(junk), "--steps", "1", "--aug", "none")
    assert code == 2 and "no tensor matches the encoder" in capsys.readouterr().err


def test_encoder_weights_file_is_loaded(tmp_path):
    from inspect_train.models.segmenters import build_segmenter

    donor = build_segmenter("unet", 3, {"encoder_depth": 3, "decoder_channels": [16, 8, 4]})
    path = tmp_path / "enc.pt"
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in donor.encoder.state_dict().items()}}, path)
    grey = build_segmenter("unet", 1, {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}, weights=str(path))
    # The RGB first convolution is summed to grey; everything else is copied as-is.
    assert torch.allclose(grey.encoder.conv1.weight, donor.encoder.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(grey.encoder.layer1[0].conv1.weight, donor.encoder.layer1[0].conv1.weight)


def test_paired_targets_use_paired_goods():
    images = torch.rand(4, 1, 8, 8)
    masks = torch.zeros(4, 1, 8, 8)
    masks[1, :, 2:4, 2:4] = 1  # a real defect image
    masks[2:, :, 5:, 5:] = 1  # two synthetic ones
    goods = torch.zeros(2, 1, 8, 8)
    batch = Batch(images, torch.zeros(4, dtype=torch.long), masks, torch.tensor([False, False, True, True]),
                  synthetic_goods=goods)
    targets, weights = paired_targets(batch)
    assert torch.equal(targets[:2], images[:2]) and torch.equal(targets[2:], goods)
    assert weights[0].min() == 1 and weights[1].sum() == 64 - 4 and weights[2:].min() == 1
    assert not math.isnan(float(weights.sum()))


def test_dfmgan_generators_are_trained_and_cached(tmp_path, toy_root):
    """--aug dfmgan goes through the shared DFMGAN cache: stage 1 + stage 2 per defect type, then reused."""
    gens = tmp_path / "gens"
    extra = ["--model", "unet", "--aug", "dfmgan", "--steps", "3", "--no-baseline", "--generators", str(gens),
             "--backbone-steps", "2", "--defect-steps", "2"]
    code, out = _run(tmp_path, toy_root, *extra)
    assert code == 0
    index = json.loads((gens / "index.json").read_text())
    assert sorted(index["defects"]["p1"]) == ["hole", "scratch", "stain"]
    results = json.loads((out / "results.json").read_text())
    part = results["partitions"][0]
    assert list(part["arms"]) == ["dfmgan"] and set(part["arms"]["dfmgan"]) == set(METRIC_KEYS)
    assert part["runs"]["dfmgan"]["synthetic_samples_seen"] == 3 * 8
    stamp = (gens / index["defects"]["p1"]["hole"]["checkpoint"]).stat().st_mtime
    code, _ = _run(tmp_path, toy_root, *extra, name="again")
    assert code == 0 and (gens / index["defects"]["p1"]["hole"]["checkpoint"]).stat().st_mtime == stamp


def test_classify_and_segment_take_the_same_flags():
    """One task shape: the same flags with the same meaning; each task adds only its own (--with-good, --open-set, --unknown; --encoder)."""
    from inspect_train.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    flags = {name: {o for a in commands[name]._actions for o in a.option_strings} for name in ("classify", "segment")}
    assert flags["classify"] - flags["segment"] == {"--with-good", "--open-set", "--unknown"}
    assert flags["segment"] - flags["classify"] == {"--encoder"}
    for name in ("classify", "segment"):
        aug = next(a for a in commands[name]._actions if "--aug" in a.option_strings)
        assert aug.default == ["crop-paste"] and aug.nargs == "+"


def test_paper_scale_gan_on_cpu_gets_a_hint(toy_root):
    """Opening dfmgan-128 generators on a CPU says how long that takes and what to use instead (nothing is trained)."""
    from inspect_train.data.category import load_category
    from inspect_train.tasks.generators import open_cache

    said = []
    data = load_category(toy_root, "toy", size=(64, 64))
    open_cache("dfmgan", data, {"config": "dfmgan-128"}, Path("/nonexistent/gens"), seed=0, device="cpu",
               manifest_path="m.json", say=said.append)
    assert any("--gan-config dfmgan-64" in line for line in said)
    said.clear()
    open_cache("dfmgan", data, {"config": "dfmgan-tiny"}, Path("/nonexistent/gens"), seed=0, device="cpu",
               manifest_path="m.json", say=said.append)
    assert not any("days" in line for line in said)
