"""What a new user does after training, in the README's words: train with `classify --aug none crop-paste`
(and `segment`), then `predict` on a folder of images with the saved model, then `export` it. Predictions on
the PNG files must equal the run's own evaluation of the same test images; the model file loads into timm."""

import csv

import numpy as np
import pytest
import timm
import torch

from inspect_train.cli import main
from inspect_train.models.checkpoint import load_model, read_model_file
from conftest import write_tiny_classify_config


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def classify_run(toy_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("ship")
    config = write_tiny_classify_config(work / "tiny.yaml", save_models=True, model="resnet18")  # the default net
    out = work / "run"
    assert main(["classify", "--data", str(toy_root), "--category", "toy", "--config", str(config), "--aug", "none",
                 "crop-paste", "--partitions", "1", "--quiet", "--out", str(out)]) == 0
    return out


def test_predict_on_a_folder_matches_the_runs_own_evaluation(classify_run, toy_root, tmp_path):
    model = classify_run / "P1" / "crop-paste" / "model.pt"
    assert main(["predict", "--model", str(model), "--images", str(toy_root / "toy" / "test" / "stain"),
                 "--out", str(tmp_path / "preds"), "--device", "cpu"]) == 0
    predicted = {f"stain/{r['file'].split('/')[-1]}": r for r in read_csv(tmp_path / "preds" / "predictions.csv")}
    evaluated = {r["file"]: r for r in read_csv(classify_run / "P1" / "crop-paste" / "predictions.csv")}
    common = sorted(set(predicted) & set(evaluated))
    assert len(common) >= 10  # the partition's stain test images
    for name in common:
        assert predicted[name]["predicted_class"] == evaluated[name]["predicted_class"]
        for cls in ("hole", "scratch", "stain"):
            assert float(predicted[name][f"p_{cls}"]) == pytest.approx(float(evaluated[name][f"p_{cls}"]), abs=1e-5)


def test_model_file_records_what_it_needs_and_loads_into_timm(classify_run):
    path = classify_run / "P1" / "none" / "model.pt"
    record = read_model_file(path)
    assert record["classes"] == ["hole", "scratch", "stain"] and record["resolution"] == [32, 32]
    assert record["channels"] == 3 and record["architecture"]["name"] == "resnet18"
    assert record["trained_on"]["partition"] == 1 and record["trained_on"]["arm"] == "none"
    assert "torch" in record["packages"] and len(record["normalisation"]["mean"]) == 3
    net = timm.create_model("resnet18", num_classes=3, in_chans=3)
    net.load_state_dict(record["state_dict"])  # no prefix, no extra buffers: plain timm weights
    model, _ = load_model(path)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(record["normalisation"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(record["normalisation"]["std"]).view(1, -1, 1, 1)
    assert torch.allclose(model(x), net.eval()((x - mean) / std), atol=1e-5)


def test_export_onnx_of_the_trained_classifier_runs_in_onnxruntime(classify_run, tmp_path):
    import onnxruntime

    model_path = classify_run / "P1" / "crop-paste" / "model.pt"
    target = tmp_path / "model.onnx"
    assert main(["export", "--model", str(model_path), "--format", "onnx", "--out", str(target)]) == 0
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    (probabilities,) = session.run(None, {session.get_inputs()[0].name: x})
    model, _ = load_model(model_path)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    assert np.allclose(probabilities, expected, atol=1e-4)


def test_segmenter_run_then_predict_writes_overlays_with_the_stored_threshold(toy_root, fast_presets, tmp_path):
    out = tmp_path / "seg"
    assert main(["segment", "--data", str(toy_root), "--category", "toy", "--config", fast_presets["segment"], "--aug",
                 "crop-paste", "--steps", "3", "--partitions", "1", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    model = out / "P1" / "crop-paste" / "model.pt"
    threshold = read_model_file(model)["threshold"]
    assert 0 <= threshold["pixel"] <= 1 and "training images" in threshold["chosen_on"]
    assert main(["predict", "--model", str(model), "--images", str(toy_root / "toy" / "test" / "hole"),
                 "--out", str(tmp_path / "preds")]) == 0
    rows = read_csv(tmp_path / "preds" / "predictions.csv")
    assert len(rows) == 18 and all(float(r["threshold"]) == pytest.approx(threshold["pixel"]) for r in rows)
    assert len(list((tmp_path / "preds" / "overlays").glob("*.png"))) == 18
    evaluated = {r["file"]: r for r in read_csv(out / "P1" / "crop-paste" / "predictions.csv")}
    for row in rows:
        name = f"hole/{row['file'].split('/')[-1]}"
        if name in evaluated:
            assert float(row["image_score"]) == pytest.approx(float(evaluated[name]["image_score"]), abs=1e-5)
            assert int(row["defect_pixels"]) == int(evaluated[name]["defect_pixels"])
