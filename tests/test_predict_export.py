"""predict and export on tiny saved models: the CLI's numbers must be the PyTorch model's numbers.

Each model type (timm classifier, smp U-Net, DRAEM) is saved once per module at 32x32 with random weights;
what is compared is the plumbing (reading, resizing, channels, heads, probabilities, exported graphs),
which random weights exercise as well as trained ones.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inspect_train.cli import main
from inspect_train.data.images import read_image_array, resize_image, to_channels
from inspect_train.metrics.segmentation import image_scores
from inspect_train.models.checkpoint import load_model, save_model
from inspect_train.models.registry import architecture, create_classifier, create_segmenter

RES = (32, 32)
CLASSES = ["good", "scratch", "dent"]
THRESHOLD = {"pixel": 0.5, "smooth_sigma": 2.0, "chosen_on": "train"}
UNET = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]}
DRAEM = {"recon_width": 8, "recon_levels": 3, "disc_width": 8, "disc_levels": 3}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One saved model file per model type: name -> path."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    specs = {
        "resnet18": (create_classifier("resnet18", 3, 3), architecture("classify", "resnet18", 3, num_classes=3),
                     3, CLASSES, None),
        "unet": (create_segmenter("unet", 1, UNET), architecture("segment", "unet", 1, config=UNET),
                 1, ["scratch"], THRESHOLD),
        "draem": (create_segmenter("draem", 3, DRAEM), architecture("segment", "draem", 3, config=DRAEM),
                  3, ["scratch", "dent"], THRESHOLD),
    }
    paths = {}
    for name, (net, arch, channels, classes, threshold) in specs.items():
        paths[name] = save_model(root / name / "model.pt", net, architecture=arch, classes=classes,
                                 resolution=RES, channels=channels, threshold=threshold)
    return paths


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Grey and RGB PNGs, one of another size, one JPEG, and a text file the folder scan must skip."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L").save(root / "a_grey.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(root / "b_rgb.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB").save(root / "c_big.png")
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8), "L").save(root / "d_small.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


def expected_output(model_path: Path, files: list[Path]) -> np.ndarray:
    """The PyTorch model's probabilities on the images prepared as training prepares them."""
    model, meta = load_model(model_path, "cpu")
    x = torch.stack([to_channels(resize_image(read_image_array(f), RES), meta["channels"]) for f in files])
    with torch.no_grad():
        out = model(x.float() / 255.0)
    if meta["task"] == "classify":
        return torch.softmax(out, dim=1).numpy()
    return torch.sigmoid(out[-1] if isinstance(out, tuple) else out)[:, 0].numpy()


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def one_error_line(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_predict_classifier(models, image_dir, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(models["resnet18"]), "--images", str(image_dir), "--out", str(out),
                 "--device", "cpu", "--batch-size", "3"]) == 0
    assert "predicted 4 image(s)" in capsys.readouterr().out
    header, rows = read_csv(out / "predictions.csv")
    assert header == ["file", "predicted_class", "score", "p_good", "p_scratch", "p_dent"]
    files = sorted(p for p in image_dir.iterdir() if p.suffix != ".txt")
    assert [Path(r["file"]).name for r in rows] == [f.name for f in files]
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(probs, expected_output(models["resnet18"], files), atol=1e-5)
    assert [r["predicted_class"] for r in rows] == [CLASSES[i] for i in probs.argmax(1)]
    np.testing.assert_allclose([float(r["score"]) for r in rows], probs.max(1), atol=1e-6)
    assert not (out / "overlays").exists()


@pytest.mark.parametrize("name", ["unet", "draem"])
def test_predict_segmenter(name, models, image_dir, tmp_path):
    out = tmp_path / "pred"
    files = [image_dir / "c_big.png", image_dir / "a_grey.png", image_dir / "d_small.jpg"]
    assert main(["predict", "--model", str(models[name]), "--images", *map(str, files), "--out", str(out),
                 "--device", "cpu"]) == 0
    header, rows = read_csv(out / "predictions.csv")
    assert header == ["file", "image_score", "defect_pixels", "predicted", "threshold"]
    assert [Path(r["file"]).name for r in rows] == [f.name for f in files]  # the order given
    maps = expected_output(models[name], files)
    np.testing.assert_allclose([float(r["image_score"]) for r in rows], image_scores(maps, 2.0), atol=1e-5)
    for row, prob, f in zip(rows, maps, files):
        assert float(row["threshold"]) == 0.5
        defects = int(row["defect_pixels"])
        assert abs(defects - int((prob >= 0.5).sum())) <= int((np.abs(prob - 0.5) < 1e-5).sum())
        assert row["predicted"] == ("defect" if defects else "good")
        mask = np.array(Image.open(out / "masks" / f"{f.stem}_mask.png"))
        assert mask.shape == RES and set(np.unique(mask)) <= {0, 255} and (mask == 255).sum() == defects
        with Image.open(out / "overlays" / f"{f.stem}.png") as overlay:
            assert overlay.size == (3 * RES[1], RES[0]) and overlay.mode == "RGB"
    assert not list(out.glob(".predict-*"))


def test_predict_threshold_override(models, image_dir, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(models["unet"]), "--images", str(image_dir / "b_rgb.png"),
                 "--out", str(out), "--device", "cpu", "--threshold", "0"]) == 0
    _, rows = read_csv(out / "predictions.csv")
    assert rows[0]["defect_pixels"] == str(RES[0] * RES[1]) and rows[0]["predicted"] == "defect"
    assert float(rows[0]["threshold"]) == 0.0


def run_onnx(path: Path, images: torch.Tensor) -> tuple[np.ndarray, dict]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    return output, session.get_modelmeta().custom_metadata_map


def run_torchscript(path: Path, images: torch.Tensor) -> tuple[np.ndarray, dict]:
    extra = {"meta.json": ""}
    with warnings.catch_warnings():  # TorchScript is deprecated in torch but still what this format is
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    with torch.no_grad():
        output = loaded(images).numpy()
    return output, {k: json.dumps(v) for k, v in json.loads(extra["meta.json"]).items()}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", ["resnet18", "unet", "draem"])
def test_export_matches_pytorch(name, fmt, models, tmp_path, capsys):
    """Exported once per model type and format; run here on a batch of 3 (export traced a batch of 2)."""
    target = tmp_path / f"exported{'.onnx' if fmt == 'onnx' else '.ts.pt'}"
    assert main(["export", "--model", str(models[name]), "--format", fmt, "--out", str(target)]) == 0
    assert "max abs difference" in capsys.readouterr().out
    assert target.is_file() and not list(tmp_path.glob(".export-*"))
    model, meta = load_model(models[name], "cpu")
    images = torch.rand((3, meta["channels"], *RES), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(images)
    if meta["task"] == "classify":
        expected = torch.softmax(out, dim=1).numpy()
    else:
        expected = torch.sigmoid(out[-1] if isinstance(out, tuple) else out).numpy()
    got, props = (run_onnx if fmt == "onnx" else run_torchscript)(target, images)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert json.loads(props["classes"]) == meta["classes"]
    assert json.loads(props["resolution"]) == list(RES)
    assert json.loads(props["channels"]) == meta["channels"]
    assert json.loads(props["threshold"]) == meta["threshold"]


def test_export_default_out_next_to_model(models, tmp_path):
    model = tmp_path / "run" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(models["unet"].read_bytes())
    assert main(["export", "--model", str(model), "--format", "torchscript", "--no-check"]) == 0
    assert (model.parent / "model.ts.pt").is_file()


@pytest.mark.parametrize("command", ["predict", "export"])
def test_not_a_model_file(command, image_dir, tmp_path, capsys):
    text = tmp_path / "text" / "model.pt"
    text.parent.mkdir()
    text.write_text("hello")
    foreign = tmp_path / "dict" / "model.pt"
    foreign.parent.mkdir()
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path in (text, foreign, tmp_path / "missing.pt"):
        extra = ["--images", str(image_dir), "--out", str(tmp_path / "o")] if command == "predict" \
            else ["--format", "onnx"]
        err = one_error_line(capsys, main([command, "--model", str(path), *extra]))
        assert str(path) in err
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.rglob("*.onnx"))


@pytest.mark.parametrize("command", ["predict", "export"])
def test_unknown_task_in_the_model_file(command, image_dir, tmp_path, capsys):
    """A model file of a task nobody registered: one line naming the file, the task and the known ones."""
    path = save_model(tmp_path / "model.pt", torch.nn.Conv2d(3, 1, 1), architecture=architecture("regress", "conv", 3),
                      classes=["scratch"], resolution=RES, channels=3)
    extra = ["--images", str(image_dir), "--out", str(tmp_path / "o")] if command == "predict" \
        else ["--format", "torchscript"]
    err = one_error_line(capsys, main([command, "--model", str(path), *extra]))
    assert f"{path}: unknown task 'regress' in the model file (known: classify, detect, segment)" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "model.ts.pt").exists()


def test_predict_input_errors(models, image_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("a_grey.png", "b_rgb.png"):
        (broken / f).write_bytes((image_dir / f).read_bytes())
    (broken / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    err = one_error_line(capsys, main(["predict", "--model", str(models["unet"]), "--images", str(broken),
                                       "--out", str(out), "--device", "cpu", "--batch-size", "2"]))
    assert "c_corrupt.png" in err
    assert not out.exists()  # nothing half-written: not even the first batch's overlays

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("user file")
    one_error_line(capsys, main(["predict", "--model", str(models["unet"]), "--images", str(broken),
                                 "--out", str(kept), "--device", "cpu"]))
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images found" in one_error_line(
        capsys, main(["predict", "--model", str(models["unet"]), "--images", str(empty), "--out", str(out)]))
    assert "no such file or folder" in one_error_line(
        capsys, main(["predict", "--model", str(models["unet"]), "--images", str(tmp_path / "nowhere"),
                      "--out", str(out)]))
    assert "applies to segmenters and detectors" in one_error_line(
        capsys, main(["predict", "--model", str(models["resnet18"]), "--images", str(image_dir), "--out", str(out),
                      "--threshold", "0.5"]))
