"""`inspect-train detect`: boxes from masks, the COCO metrics by hand, and the command end to end on the toy data
at the tiny preset (32x32, FCOS on a small ResNet-18 pyramid), then predict and export on its model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inspect_train.boxes import box_targets, mask_boxes
from inspect_train.cli import main
from inspect_train.metrics.detection import (ap_from_matches, box_ap, box_f1_threshold, coco_matches,
                                             detection_metrics, image_metrics, recall_key, threshold_at_fpr)

METRICS = ["map_50", "map_50_95", "recall_at_fpr_0.05", "image_auroc"]


def _box(x0, y0, x1, y1):
    return torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)


def _found(boxes, scores, labels):
    return {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.as_tensor(scores, dtype=torch.float32), "labels": torch.as_tensor(labels)}


def _truth(boxes, labels):
    return {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.as_tensor(labels)}


# ----------------------------------------------------------------------------- boxes from masks


def test_two_components_give_two_boxes_with_the_image_label():
    mask = torch.zeros(1, 12, 16)
    mask[0, 1:3, 2:5] = 1  # a 3x2 blob
    mask[0, 3, 5] = 1  # touches the blob only at a corner: 8-connected, the same component
    mask[0, 7:11, 10] = 1  # a vertical line, apart
    boxes = mask_boxes(mask)
    assert sorted(boxes.tolist()) == [[2.0, 1.0, 6.0, 4.0], [10.0, 7.0, 11.0, 11.0]]  # pixel edges: x1 = x0 + w
    assert mask_boxes(torch.zeros(8, 8)).shape == (0, 4)

    masks = torch.stack([mask, torch.zeros(1, 12, 16), mask * 0.9])  # a good image; a soft mask above 0.5
    targets = box_targets(masks, torch.tensor([2, 3, 0]))
    assert targets[0]["labels"].tolist() == [2, 2] and len(targets[0]["boxes"]) == 2
    assert targets[1]["boxes"].shape == (0, 4) and targets[1]["labels"].shape == (0,)  # no box, whatever its label
    assert targets[2]["labels"].tolist() == [0, 0]


def test_box_join_groups_the_pieces_of_a_broken_line():
    from inspect_train.boxes import components_boxes

    mask = np.zeros((12, 20), bool)
    mask[2, 1:4] = mask[2, 5:8] = mask[3, 9:12] = True  # a thin line broken by one-pixel gaps (one diagonal step)
    mask[9:11, 15:17] = True  # a blob 4 pixels below the line's end
    assert len(components_boxes(mask)) == 4
    assert sorted(components_boxes(mask, join=1)) == [(1, 2, 11, 2), (15, 9, 2, 2)]  # the pieces' own extent
    assert sorted(components_boxes(mask, join=3)) == [(1, 2, 16, 9)]
    assert sorted(mask_boxes(torch.from_numpy(mask), join=1).tolist()) == [[1.0, 2.0, 12.0, 4.0],
                                                                          [15.0, 9.0, 17.0, 11.0]]
    with pytest.raises(ValueError):
        components_boxes(mask, join=-1)


def test_box_join_sets_the_test_truth(tmp_path):
    """One found box over a whole broken line: a hit when the truth joins the pieces, a miss against each piece."""
    from inspect_train.settings import DetectSettings
    from inspect_train.tasks.detect import TASK
    from inspect_train.tasks.runner import TestSet

    masks = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    masks[0, 0, 5, 1:5] = masks[0, 0, 5, 6:10] = masks[0, 0, 5, 11:15] = True

    class OneBox(torch.nn.Module):
        def forward(self, images):
            return [{"boxes": torch.tensor([[1.0, 5.0, 15.0, 6.0]]), "scores": torch.tensor([0.9]),
                     "labels": torch.tensor([0])}, {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                                                    "labels": torch.zeros(0, dtype=torch.long)}]

    tests = TestSet(names=["crack/a.png", "good/b.png"], images=torch.zeros(2, 1, 16, 16, dtype=torch.uint8),
                    masks=masks, labels=torch.tensor([0, 1]), classes=["crack", "good"], n_defect=1)
    scores = {join: TASK.evaluate(OneBox(), tests, DetectSettings(box_join=join), "cpu").metrics["map_50"]
              for join in (0, 1)}
    assert scores[1] == pytest.approx(1.0) and scores[0] < 0.1


def test_boxes_use_the_rule_generate_writes():
    from inspect_train.boxes import components_boxes

    rng = np.random.default_rng(3)
    mask = rng.random((20, 24)) > 0.85
    expected = sorted((x, y, x + w, y + h) for x, y, w, h in components_boxes(mask))
    assert sorted(tuple(int(v) for v in b) for b in mask_boxes(mask).tolist()) == expected


# ----------------------------------------------------------------------------- metrics by hand


def test_a_perfect_detector_scores_one_and_a_wrong_class_zero():
    truths = [_truth([[2, 2, 12, 10]], [0]), _truth([[5, 5, 9, 20]], [1]), _truth([], [])]
    perfect = [_found(t["boxes"], [0.9] * len(t["boxes"]), t["labels"]) for t in truths]
    result = box_ap(perfect, truths, ["hole", "scratch"])
    assert result["map_50"] == pytest.approx(1.0) and result["map_50_95"] == pytest.approx(1.0)
    assert result["ap_50_per_class"] == pytest.approx({"hole": 1.0, "scratch": 1.0})

    wrong = [_found(t["boxes"], [0.9] * len(t["boxes"]), 1 - t["labels"]) for t in truths]  # right place, wrong type
    result = box_ap(wrong, truths, ["hole", "scratch"])
    assert result["map_50"] == pytest.approx(0.0) and result["map_50_95"] == pytest.approx(0.0)


def test_a_box_at_iou_064_counts_at_three_of_ten_thresholds():
    truths = [_truth([[0, 0, 10, 10]], [0])]
    found = [_found([[0, 0, 10, 6.4]], [0.8], [0])]  # IoU 64 / 100: right at 0.50, 0.55, 0.60; wrong from 0.65
    result = box_ap(found, truths, ["hole"])
    assert result["map_50"] == pytest.approx(1.0)
    assert result["map_50_95"] == pytest.approx(0.3)
    assert result["ap_50_95_per_class"]["hole"] == pytest.approx(0.3)


def test_recall_at_a_fixed_false_positive_rate_by_hand():
    good = np.linspace(0.0, 0.95, 20)  # 20 good images: 5% lets one through, so the cut is the second best, 0.90
    assert threshold_at_fpr(good, 0.05) == pytest.approx(0.90)
    defect = np.array([0.97, 0.92, 0.88, 0.2])  # above 0.90: two of four
    scores = np.r_[defect, good]
    is_defect = np.r_[np.ones(4, bool), np.zeros(20, bool)]
    metrics = image_metrics(scores, is_defect, 0.05)
    assert metrics[recall_key(0.05)] == pytest.approx(0.5)
    assert metrics["image_threshold_at_fpr"] == pytest.approx(0.90)
    # AUROC: each defect score against the 20 good ones (ties count half)
    wins = sum((d > good).sum() + 0.5 * (d == good).sum() for d in defect)
    assert metrics["image_auroc"] == pytest.approx(wins / 80)


def test_an_image_score_is_its_best_box():
    truths = [_truth([[1, 1, 5, 5]], [0]), _truth([], [])]
    found = [_found([[1, 1, 5, 5], [8, 8, 9, 9]], [0.3, 0.7], [0, 0]), _found([], [], [])]
    metrics = detection_metrics(found, truths, [True, False], ["hole"], 0.05)
    assert metrics["image_auroc"] == pytest.approx(1.0)  # 0.7 for the defect image, 0 for the good one (no box)


def test_bootstrap_accumulation_repeats_the_evaluator():
    """The resampling path (pycocotools' per-image matches, accumulated here) gives the evaluator's mAP."""
    g = torch.Generator().manual_seed(0)
    truths, found = [], []
    for i in range(40):
        k = int(torch.randint(0, 3, (1,), generator=g)) if i < 25 else 0
        xy = torch.rand(k, 2, generator=g) * 40
        boxes = torch.cat([xy, xy + torch.rand(k, 2, generator=g) * 20 + 2], 1)
        labels = torch.randint(0, 3, (k,), generator=g)
        truths.append(_truth(boxes, labels))
        m = int(torch.randint(0, 6, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * 40
        noise = torch.cat([xy, xy + torch.rand(m, 2, generator=g) * 20 + 2], 1)
        labels_found = torch.cat([torch.randint(0, 3, (m,), generator=g), labels])
        found.append(_found(torch.cat([noise, boxes + torch.randn(k, 4, generator=g)]), torch.rand(m + k, generator=g),
                            labels_found))
    exact = box_ap(found, truths)
    mine = ap_from_matches(coco_matches(found, truths, 3))
    assert 0.05 < exact["map_50"] < 0.95
    assert mine["map_50"] == pytest.approx(exact["map_50"], abs=1e-6)
    assert mine["map_50_95"] == pytest.approx(exact["map_50_95"], abs=1e-6)


def test_box_f1_threshold_by_hand():
    truths = [_truth([[0, 0, 10, 10]], [0]), _truth([[20, 20, 30, 30]], [0])]
    found = [_found([[0, 0, 10, 10], [40, 40, 45, 45]], [0.9, 0.8], [0, 0]),  # a hit, then a false alarm
             _found([[20, 20, 30, 30]], [0.3], [0])]  # a hit with a low score
    # F1 down the score order: 0.9 -> 2/3, 0.8 -> 2/4, 0.3 -> 4/5: the best cut keeps everything from 0.3
    assert box_f1_threshold(found, truths) == pytest.approx(0.3)
    assert box_f1_threshold(found[:1], truths[:1]) == pytest.approx(0.9)


# ----------------------------------------------------------------------------- the command


def _run(tmp_path, toy_root, *extra, name="run", config="detect-tiny"):
    out = tmp_path / name
    code = main(["detect", "--data", str(toy_root), "--category", "toy", "--config", config,
                 "--partitions", "1", "--device", "cpu", "--quiet", "--out", str(out), *extra])
    return code, out


@pytest.fixture(scope="module")
def trained(toy_root, fast_presets, tmp_path_factory):
    """One crop-paste run at the tiny preset (20 bootstrap resamples), shared by the checks of its outputs, predict
    and export. 60 steps: both arms already reach mAP@50 ~0.55-0.7 and image AUROC ~1 (as at 120 steps)."""
    code, out = _run(tmp_path_factory.mktemp("detect"), toy_root, "--aug", "crop-paste", "--steps", "60",
                     config=fast_presets["detect"])
    assert code == 0
    return out


def test_end_to_end_results_outputs_and_tests(trained):
    out = trained
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "detect" and results["arms"] == ["none", "crop-paste"]
    assert results["metrics"] == METRICS and results["headline"] == "map_50"
    part = results["partitions"][0]
    for arm in ("none", "crop-paste"):
        metrics = part["arms"][arm]
        for key in METRICS:
            assert 0.0 <= metrics[key] <= 1.0, (arm, key, metrics[key])
        assert set(metrics["ap_50_per_class"]) == {"hole", "scratch", "stain"}
        folder = out / "P1" / arm
        for name in ("model.pt", "predictions.csv", "detections.json", "ground_truth.json"):
            assert (folder / name).is_file(), name
        assert list((out / "tb" / "P1" / arm).glob("events.out.tfevents.*"))
        truth = json.loads((folder / "ground_truth.json").read_text())
        assert len(truth["images"]) == part["test_defects"] + part["test_good"]
        assert len(truth["annotations"]) >= part["test_defects"]  # every test defect image has a box or more
        assert {c["name"] for c in truth["categories"]} == {"hole", "scratch", "stain"}
        found = json.loads((folder / "detections.json").read_text())
        assert found and {"image_id", "category_id", "bbox", "score"} <= set(found[0])
        with open(folder / "predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == len(truth["images"])
        assert {r["true_class"] for r in rows} == {"hole", "scratch", "stain", "good"}
        assert all(r["true_boxes"] == "0" for r in rows if r["true_class"] == "good")
    assert set(results["summary"]["difference"]["crop-paste"]) == set(METRICS)
    tests = part["tests"]["crop-paste"]
    for key in ("map_50", "map_50_95", "image_auroc"):
        assert tests[key]["test"] == "paired_bootstrap" and tests[key]["low"] <= tests[key]["high"], key
        diff = part["arms"]["crop-paste"][key] - part["arms"]["none"][key]
        assert tests[key]["difference"] == pytest.approx(diff, abs=1e-5)
    assert tests["recall_at_fpr_0.05"]["test"] == "mcnemar_exact"
    assert part["runs"]["crop-paste"]["synthetic_samples_seen"] == 60 * 8  # half of a batch of 16
    assert "McNemar test for the image-level defect/good decisions" in (out / "report.md").read_text()


def test_the_detector_learns_the_toy_defects(trained):
    part = json.loads((trained / "results.json").read_text())["partitions"][0]
    for arm in ("none", "crop-paste"):  # the toy defects are plain to see; a detector that learned nothing gets ~0
        assert part["arms"][arm]["map_50"] > 0.3, part["arms"][arm]
        assert part["arms"][arm]["image_auroc"] > 0.9, part["arms"][arm]


def test_no_test_image_reaches_training(trained):
    """The protocol: every real image any arm trained on is a base image of the partition or train/good."""
    results = json.loads((trained / "results.json").read_text())
    manifest = json.loads((trained / "manifest.json").read_text())
    split = manifest["partitions"][0]["defects"]
    test_names = {(t, n) for t, s in split.items() for n in s["test"]}
    base_names = {(t, n) for t, s in split.items() for n in s["base"]}
    used = {tuple(item) for item in results["partitions"][0]["real_images_used"]}
    assert used and not used & test_names
    defects_used = {u for u in used if u[0] != "good"}
    assert defects_used == base_names  # each base image was served
    assert all(name.startswith("train/good/") for cls, name in used if cls == "good")
    with open(trained / "P1" / "none" / "predictions.csv", newline="") as handle:
        tested = {tuple(r["file"].split("/", 1)) for r in csv.DictReader(handle) if r["true_class"] != "good"}
    assert tested == test_names


def test_same_seed_same_numbers(tmp_path, toy_root, fast_presets):
    runs = [_run(tmp_path, toy_root, "--aug", "cut-paste", "--steps", "4", name=f"r{i}", config=fast_presets["detect"])
            for i in range(2)]
    assert all(code == 0 for code, _ in runs)
    first, second = (json.loads((out / "results.json").read_text())["partitions"][0] for _, out in runs)
    assert first["arms"] == second["arms"] and first["tests"] == second["tests"]
    found = [json.loads((out / "P1" / "cut-paste" / "detections.json").read_text()) for _, out in runs]
    assert found[0] == found[1]


def test_no_data_runs_on_toy_with_baseline_only(tmp_path):
    out = tmp_path / "toy"
    code = main(["detect", "--aug", "none", "--steps", "2", "--partitions", "2", "--device", "cpu", "--quiet",
                 "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["run"]["preset"] == "detect-tiny" and results["config"]["run"]["resolution"] == [32, 32]
    assert list(results["partitions"][0]["arms"]) == ["none"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "yolo"], "unknown detector"),
        (["--encoder", "resnet_nope"], "not a timm model name"),
        (["--weights", "/nonexistent/w.pt"], "weights file not found"),
        (["--config", "detect-nope"], "detect config not found"),
        (["--steps", "0"], "steps must be a positive integer"),
        (["--aug", "none", "--no-baseline"], "cannot go with --no-baseline"),
        (["--box-join", "-1"], "--box-join must be 0 or"),
        (["--data", "/nonexistent/folder"], "data folder not found"),
    ],
)
def test_bad_input_exits_2(tmp_path, toy_root, capsys, extra, message):
    args = ["detect", "--category", "toy", "--config", "detect-tiny", "--out", str(tmp_path / "bad"), "--device", "cpu",
            "--quiet", "--partitions", "1"]
    if "--data" not in extra:
        args += ["--data", str(toy_root)]
    code = main(args + extra)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text, message", [
    ("recall_fpr: 1.5\n", "recall_fpr must be between 0 and 1"),
    ("models:\n  fcos: {levelz: [1, 2]}\n", "unknown key(s) levelz"),
    ("models:\n  fcos: {fpn_channels: 40}\n", "multiple of 32"),
])
def test_bad_preset_exits_2(tmp_path, toy_root, capsys, text, message):
    preset = tmp_path / "bad.yaml"
    preset.write_text((Path(__file__).resolve().parents[1] / "configs" / "detect-tiny.yaml").read_text() + text)
    code = main(["detect", "--data", str(toy_root), "--category", "toy", "--config", str(preset), "--out",
                 str(tmp_path / "o"), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_detect_takes_the_segment_flags():
    """One task shape: detect has segment's flags (its --encoder names the timm backbone), plus --box-join."""
    from inspect_train.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    flags = {name: {o for a in commands[name]._actions for o in a.option_strings} for name in ("segment", "detect")}
    assert flags["detect"] == flags["segment"] | {"--box-join"}


# ----------------------------------------------------------------------------- models, predict, export


@pytest.mark.parametrize("name", ["fcos", "retinanet", "fasterrcnn"])
def test_each_detector_trains_saves_and_reloads(tmp_path, name):
    from inspect_train.models.checkpoint import load_model, save_model
    from inspect_train.models.registry import architecture, create_detector

    config = {"levels": [1, 2, 3], "extra_levels": 1, "fpn_channels": 32, **({"roi_size": 32} if name == "fasterrcnn"
                                                                              else {})}
    torch.manual_seed(0)
    model = create_detector(name, 1, 2, (48, 32), config)
    masks = torch.zeros(2, 1, 48, 32)
    masks[0, 0, 10:20, 5:15] = 1
    terms = model(torch.rand(2, 1, 48, 32), box_targets(masks, torch.tensor([1, 2])))
    loss = sum(terms.values())
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    path = save_model(tmp_path / "model.pt", model, architecture=architecture("detect", name, 1, num_classes=2,
                                                                              config=config, size=(48, 32)),
                      classes=["a", "b", "good"], resolution=(48, 32), channels=1)
    again, meta = load_model(path)
    model.eval()
    x = torch.rand(3, 1, 48, 32)
    with torch.no_grad():
        for mine, theirs in zip(model(x), again(x)):
            assert torch.equal(mine["boxes"], theirs["boxes"]) and torch.equal(mine["labels"], theirs["labels"])
            assert mine["labels"].numel() == 0 or mine["labels"].max() <= 1  # class indices, no background
    assert meta["task"] == "detect"


def test_backbone_weights_file_is_loaded(tmp_path):
    import timm

    from inspect_train.models.registry import create_detector

    donor = timm.create_model("resnet18", num_classes=5)
    path = tmp_path / "resnet18.pt"
    torch.save(donor.state_dict(), path)
    model = create_detector("fcos", 1, 1, (32, 32), {"levels": [1, 2], "extra_levels": 0, "fpn_channels": 32},
                            weights=str(path))
    body = model.net.backbone.body
    assert torch.equal(body.layer1[0].conv1.weight, donor.layer1[0].conv1.weight)
    assert body.conv1.weight.shape[1] == 1  # the RGB first convolution adapted to grey
    assert torch.allclose(model.mean, torch.full_like(model.mean, sum((0.485, 0.456, 0.406)) / 3))


def test_predict_with_a_trained_detector(trained, toy_root, tmp_path, capsys):
    from inspect_train.data.images import read_image_array, resize_image, to_channels
    from inspect_train.models.checkpoint import load_model

    model_path = trained / "P1" / "crop-paste" / "model.pt"
    files = sorted((toy_root / "toy" / "test" / "hole").glob("*.png"))[:3] + [toy_root / "toy" / "test" / "good" /
                                                                               "000.png"]
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_path), "--images", *map(str, files), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "(detect)" in capsys.readouterr().out
    with open(out / "predictions.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    assert header == ["file", "image_score", "boxes_kept", "predicted", "threshold", "boxes"]
    model, meta = load_model(model_path)
    threshold = meta["threshold"]["score"]
    x = torch.stack([to_channels(resize_image(read_image_array(f), (32, 32)), 3) for f in files]).float() / 255
    with torch.no_grad():
        expected = model(x)
    for row, found in zip(rows, expected):
        best = float(found["scores"].max()) if len(found["scores"]) else 0.0
        assert float(row["image_score"]) == pytest.approx(best, abs=1e-5)
        kept = int((found["scores"] >= threshold).sum())
        assert int(row["boxes_kept"]) == kept and row["predicted"] == ("defect" if kept else "good")
        assert len([b for b in row["boxes"].split("; ") if b]) == kept
    assert sum(r["predicted"] == "defect" for r in rows[:3]) >= 2  # a trained detector finds most toy holes
    assert len(list((out / "overlays").glob("*.png"))) == len(files)
    record = json.loads((out / "detections.json").read_text())
    assert len(record["images"]) == len(files) and len(record["annotations"]) == sum(len(f["scores"]) for f in expected)

    strict = tmp_path / "strict"
    assert main(["predict", "--model", str(model_path), "--images", *map(str, files), "--out", str(strict),
                 "--device", "cpu", "--threshold", "1"]) == 0
    with open(strict / "predictions.csv", newline="") as handle:
        assert {r["predicted"] for r in csv.DictReader(handle)} == {"good"}


def test_export_torchscript_and_onnx_refused(trained, tmp_path, capsys):
    model_path = trained / "P1" / "none" / "model.pt"
    target = tmp_path / "det.ts.pt"
    assert main(["export", "--model", str(model_path), "--format", "torchscript", "--out", str(target)]) == 0
    assert "check: max abs difference" in capsys.readouterr().out
    loaded = torch.jit.load(str(target))
    with torch.no_grad():
        found = loaded(torch.rand(2, 3, 32, 32))
    assert len(found) == 2 and set(found[0]) == {"boxes", "scores", "labels"}
    code = main(["export", "--model", str(model_path), "--format", "onnx", "--out", str(tmp_path / "det.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be exported as ONNX" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "det.onnx").exists()
