"""A fourth task from this file alone: "defect-area" regresses the fraction of each image that is defect.

It registers through inspect_train.tasks.registry (settings, preset, subcommand, task object), trains through
the protocol runner from the command line, then `predict` and `export` (TorchScript and ONNX) run on its model
file without either command knowing the task. The registration is taken back when the module ends.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inspect_train.cli import build_parser, main
from inspect_train.commands._task_flags import add_task_arguments
from inspect_train.data.images import read_image_array, resize_image, to_channels
from inspect_train.errors import InputError
from inspect_train.metrics.paired import paired_bootstrap
from inspect_train.models.checkpoint import load_model
from inspect_train.models.registry import architecture
from inspect_train.online import GOOD
from inspect_train.settings import TaskSettings
from inspect_train.tasks.exporting import check_probabilities, trace_torchscript
from inspect_train.tasks.registry import TaskEntry, register_task, task_names, unregister_task
from inspect_train.tasks.runner import Evaluation

AREA = "defect-area"
RES = (32, 32)
PRESET = """
resolution: 32
model: area-net
width: 8
batch_size: 8
steps: 3
log_every: 1
grid_every: 2
bootstrap_resamples: 20
"""


@dataclass
class AreaSettings(TaskSettings):
    model: str = "area-net"
    width: int = 8  # channels of the one convolution


class AreaNet(nn.Module):
    """[0, 1] images -> the logit of each image's defect-area fraction, (N, 1)."""

    def __init__(self, in_chans: int, width: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.head = nn.Linear(width, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class AreaFraction(nn.Module):
    """The exported graph: the defect-area fraction in [0, 1], (N, 1)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(images))


def true_areas(masks: torch.Tensor) -> torch.Tensor:
    return masks.float().mean(dim=(1, 2, 3))


@torch.no_grad()
def predicted_areas(model, images: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    model.eval()
    out = [torch.sigmoid(model(images[i:i + batch_size].to(device).float() / 255.0))[:, 0].cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def area_step(net, batch):
    target = true_areas(batch.masks)
    logits = net(batch.images)[:, 0]
    loss = F.binary_cross_entropy_with_logits(logits, target)
    return loss, {"area_mae": (torch.sigmoid(logits) - target).abs().mean().detach()}


class AreaPrediction:
    """predict: each image's defect-area fraction, in predictions.csv and in areas.json."""

    header = ["file", "defect_area"]
    folders = ()
    written = " with areas.json"

    def __init__(self):
        self.areas: list[float] = []

    def batch(self, model, images, x, files, stems, stage):
        areas = torch.sigmoid(model(x))[:, 0].cpu().tolist()
        self.areas += areas
        return [[str(path), f"{area:.8g}"] for path, area in zip(files, areas)]

    def finish(self, stage: Path, files):
        (stage / "areas.json").write_text(json.dumps({str(f): a for f, a in zip(files, self.areas)}))


class AreaTask:
    name = AREA
    settings_class = AreaSettings
    headline = "area_mae"
    find_unused_parameters = False
    output_name = "defect_area"
    output_description = "defect_area: fraction of each image that is defect (N, 1)"
    export_refusals: dict[str, str] = {}

    def __init__(self, preset: str):
        self.toy_preset = self.data_preset = preset

    def summary_metrics(self, settings) -> list[str]:
        return ["area_mae"]

    def check_settings(self, settings: AreaSettings) -> None:
        if settings.model != "area-net" or settings.width < 1:
            raise InputError(f"--model {settings.model} (width {settings.width}): only area-net, width >= 1")

    def class_names(self, settings, defect_types: list[str]) -> list[str]:
        return [*sorted(defect_types), GOOD]

    def check_data(self, settings, data) -> None:
        return None

    def build_model(self, settings: AreaSettings, data, classes):
        return AreaNet(data.channels, settings.width)

    def architecture(self, settings: AreaSettings, data, classes) -> dict:
        return architecture(AREA, settings.model, data.channels, config={"width": settings.width})

    def build_from_architecture(self, record: dict):
        return AreaNet(record["in_chans"], record["config"]["width"])

    def learning_rate(self, settings) -> float:
        return float(settings.lr)

    def paired_good(self, settings) -> bool:
        return False

    def step_fn(self, settings, device):
        return area_step

    def evaluate(self, model, tests, settings, device) -> Evaluation:
        areas = predicted_areas(model, tests.images, device, settings.eval_batch_size)
        mae = float((areas - true_areas(tests.masks)).abs().mean())
        return Evaluation({"area_mae": round(mae, 6)}, areas)

    def log_evaluation(self, writer, tests, evaluation, settings) -> None:
        writer.add_scalar("test/area_mae", evaluation.metrics["area_mae"], settings.steps)

    def prediction_rows(self, tests, evaluation, threshold, settings) -> list[dict]:
        truth = true_areas(tests.masks)
        return [{"file": name, "true_area": round(float(truth[i]), 6),
                 "predicted_area": round(float(evaluation.outputs[i]), 6)} for i, name in enumerate(tests.names)]

    def paired_tests(self, tests, baseline, arm, settings, seed: int) -> dict:
        truth = true_areas(tests.masks).numpy()
        errors = [np.abs(e.outputs.numpy() - truth) for e in (baseline, arm)]
        return {"area_mae": paired_bootstrap(lambda i: (errors[0][i].mean(), errors[1][i].mean()), len(truth),
                                             settings.bootstrap_resamples, seed)}

    def decision_threshold(self, model, pool, settings, device):
        return None  # the fraction itself is the answer

    def predictor(self, meta: dict, threshold: float | None) -> AreaPrediction:
        if threshold is not None:
            raise InputError("--threshold: a defect-area model gives a fraction, not a decision")
        return AreaPrediction()

    def export_graph(self, model):
        return AreaFraction(model).eval()

    def compile_torchscript(self, graph, example, meta: dict):
        return trace_torchscript(graph, example, meta)

    def check_export(self, model, graph, path: Path, fmt: str, images) -> None:
        check_probabilities(graph, path, fmt, images)


def add_area_arguments(p) -> None:
    add_task_arguments(p, AREA, "the preset passed with --config", "the preset passed with --config",
                       model_help="area-net (the only one)")


def area_entry(preset: str) -> TaskEntry:
    return TaskEntry(name=AREA, help="regress each image's defect-area fraction",
                     description="A test's own task: every arm regresses the defect-area fraction.",
                     add_arguments=add_area_arguments, task=AreaTask(preset))


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("area-cfg") / "area.yaml"
    path.write_text(PRESET)
    return str(path)


@pytest.fixture(scope="module")
def registered(preset):
    entry = register_task(area_entry(preset))
    try:
        yield entry
    finally:
        unregister_task(AREA)
    assert AREA not in task_names() and AREA not in subcommands()  # nothing left for the other test files


@pytest.fixture(scope="module")
def trained(registered, preset, toy_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("area-run")
    assert main([AREA, "--data", str(toy_root), "--category", "toy", "--config", preset, "--aug", "none",
                 "crop-paste", "--partitions", "1", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    return out


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def model_inputs(files: list[Path], channels: int) -> torch.Tensor:
    """The images prepared as training prepares them, as [0, 1] floats."""
    return torch.stack([to_channels(resize_image(read_image_array(f), RES), channels) for f in files]).float() / 255


def subcommands() -> dict:
    return build_parser()._subparsers._group_actions[0].choices


def test_the_registered_task_has_its_subcommand(registered, preset):
    assert AREA in task_names() and {"classify", "segment", "detect"} <= set(task_names())
    flags = {o for a in subcommands()[AREA]._actions for o in a.option_strings}
    assert {"--data", "--aug", "--config", "--steps", "--out"} <= flags
    with pytest.raises(ValueError, match="already registered"):
        register_task(area_entry(preset))


def test_a_task_without_per_sample_losses_refuses_steering_in_one_line(registered, preset, toy_root, tmp_path,
                                                                        capsys):
    code = main([AREA, "--data", str(toy_root), "--category", "toy", "--config", preset, "--aug", "crop-paste",
                 "--steer", "types", "--partitions", "1", "--quiet", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"--steer types: {AREA} does not give the loss" in err[0]
    assert not (tmp_path / "a").exists()


def test_trains_every_arm_through_the_runner(trained):
    results = json.loads((trained / "results.json").read_text())
    assert results["task"] == AREA and results["headline"] == "area_mae"
    part = results["partitions"][0]
    assert list(part["arms"]) == ["none", "crop-paste"]
    for arm in ("none", "crop-paste"):
        assert 0.0 <= part["arms"][arm]["area_mae"] <= 1.0
        assert (trained / "P1" / arm / "model.pt").is_file()
    assert part["tests"]["crop-paste"]["area_mae"]["test"] == "paired_bootstrap"
    header, rows = read_csv(trained / "P1" / "crop-paste" / "predictions.csv")
    assert header == ["file", "true_area", "predicted_area"]
    assert len(rows) == part["test_defects"] + part["test_good"]
    assert all(0.0 <= float(r["predicted_area"]) <= 1.0 for r in rows)
    assert "area_mae" in (trained / "report.md").read_text()


def test_predict_runs_the_tasks_own_hook(trained, toy_root, tmp_path, capsys):
    model_path = trained / "P1" / "crop-paste" / "model.pt"
    folder = toy_root / "toy" / "test" / "hole"
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_path), "--images", str(folder), "--out", str(out),
                 "--device", "cpu", "--batch-size", "5"]) == 0
    assert f"({AREA})" in capsys.readouterr().out
    header, rows = read_csv(out / "predictions.csv")
    files = sorted(folder.glob("*.png"))
    assert header == ["file", "defect_area"] and [Path(r["file"]).name for r in rows] == [f.name for f in files]
    model, meta = load_model(model_path)
    with torch.no_grad():
        expected = torch.sigmoid(model(model_inputs(files, meta["channels"])))[:, 0].numpy()
    np.testing.assert_allclose([float(r["defect_area"]) for r in rows], expected, atol=1e-6)
    areas = json.loads((out / "areas.json").read_text())
    assert len(areas) == len(files) and not list(out.glob(".predict-*"))

    code = main(["predict", "--model", str(model_path), "--images", str(folder), "--out", str(tmp_path / "t"),
                 "--threshold", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "a defect-area model gives a fraction" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_runs_the_tasks_own_graph(fmt, trained, tmp_path, capsys):
    model_path = trained / "P1" / "none" / "model.pt"
    target = tmp_path / ("area.onnx" if fmt == "onnx" else "area.ts.pt")
    assert main(["export", "--model", str(model_path), "--format", fmt, "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "max abs difference" in printed and "-> defect_area" in printed
    model, meta = load_model(model_path)
    images = torch.rand((3, meta["channels"], *RES), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.sigmoid(model(images)).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
        assert session.get_outputs()[0].name == "defect_area"
        props = session.get_modelmeta().custom_metadata_map
    else:
        extra = {"meta.json": ""}
        with warnings.catch_warnings():  # TorchScript is deprecated in torch but still what this format is
            warnings.simplefilter("ignore", FutureWarning)
            loaded = torch.jit.load(str(target), map_location="cpu", _extra_files=extra)
        with torch.no_grad():
            got = loaded(images).numpy()
        props = {k: json.dumps(v) for k, v in json.loads(extra["meta.json"]).items()}
    assert got.shape == (3, 1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert json.loads(props["task"]) == AREA and json.loads(props["output"]).startswith("defect_area")


def test_a_model_file_of_an_unregistered_task_is_one_line(trained, registered, preset, toy_root, tmp_path, capsys):
    model_path = trained / "P1" / "none" / "model.pt"
    unregister_task(AREA)
    try:
        assert AREA not in task_names() and AREA not in subcommands()
        for command in (["predict", "--images", str(toy_root / "toy" / "test" / "hole"), "--out",
                         str(tmp_path / "o")], ["export", "--format", "torchscript"]):
            code = main([command[0], "--model", str(model_path), *command[1:]])
            err = capsys.readouterr().err.strip()
            assert code == 2 and len(err.splitlines()) == 1
            assert f"{model_path}: unknown task '{AREA}' in the model file (known: classify, detect, segment)" in err
        assert not (tmp_path / "o").exists() and not (model_path.parent / "model.ts.pt").exists()
    finally:
        register_task(registered)
