"""DeSTSeg (`segment --model destseg`): the network at tiny width, its two training stages, and a tiny run on the
toy data through the segment task, predict, export and --resume."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from inspect_train.cli import main
from inspect_train.errors import InputError
from inspect_train.metrics.segmentation import METRIC_KEYS
from inspect_train.models import destseg
from inspect_train.models.checkpoint import load_model
from inspect_train.models.registry import create_segmenter
from inspect_train.models.segmenters import segmenter_spec
from inspect_train.online import Batch
from inspect_train.tasks.resume import FINISHED

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = yaml.safe_load((CONFIGS / "segment-tiny.yaml").read_text())["models"]["destseg"]


def _batch(seed: int = 0, n: int = 4, size: int = 32) -> Batch:
    """Half real goods, half synthetic defects (a bright square) with their good twins."""
    g = torch.Generator().manual_seed(seed)
    goods = torch.rand(n, 1, size, size, generator=g) * 0.2 + 0.4
    masks = torch.zeros(n, 1, size, size)
    masks[n // 2:, :, 8:20, 10:22] = 1
    images = goods * (1 - masks) + masks * 0.95
    synthetic = torch.arange(n) >= n // 2
    return Batch(images, torch.zeros(n, dtype=torch.long), masks, synthetic, synthetic_goods=goods[synthetic])


class _Trainer:
    """The segment task's DeSTSeg step and stage schedule over `total` steps, one call per optimiser step."""

    def __init__(self, net, total: int, config=TINY):
        spec = segmenter_spec("destseg")
        self.net = net
        self.optimizer, self.scheduler = spec.optimizer(net, total, 3e-3, 0.0, config)
        self.step = spec.step(config, {}, total, "cpu")
        net.train()

    def __call__(self, batch, steps: int) -> list:
        history = []
        for _ in range(steps):
            loss, scalars, _ = self.step(self.net, batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            history.append((float(loss.detach()), set(scalars)))
        return history


def _state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(module, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in module.state_dict().items())


def test_student_learns_the_good_features_on_a_fixed_batch():
    torch.manual_seed(0)
    net = create_segmenter("destseg", 1, TINY)
    teacher, head = _state(net.teacher), _state(net.head)
    history = _Trainer(net, 100)(_batch(), 25)  # 25 of the 60 first-stage steps: the student only
    losses = [loss for loss, _ in history]
    assert all(names == {"student"} for _, names in history)
    assert losses[-1] < 0.7 * losses[0], losses
    assert _same(net.teacher, teacher) and _same(net.head, head)  # the teacher is frozen, BN statistics too


def test_head_stage_trains_the_head_only_and_its_output_follows_the_input():
    torch.manual_seed(0)
    net = create_segmenter("destseg", 1, TINY)
    train = _Trainer(net, 5)  # 3 student steps (student_fraction 0.6), then 2 head steps
    student, head = _state(net.student), _state(net.head)
    assert [names for _, names in train(_batch(), 3)] == [{"student"}] * 3
    assert not _same(net.student, student) and _same(net.head, head)
    student = _state(net.student)
    history = train(_batch(1), 2)
    assert [names for _, names in history] == [{"focal", "l1"}] * 2
    assert _same(net.student, student) and not _same(net.head, head)  # the student is frozen, BN statistics too
    net.eval()
    with torch.no_grad():
        a, b = net(_batch(0).images), net(_batch(5).images)
        again = net(_batch(0).images)
    assert a.shape == (4, 1, 32, 32)
    assert torch.equal(a, again) and (a - b).abs().max() > 1e-4


def test_stage_schedule():
    net = create_segmenter("destseg", 1, TINY)
    optimizer, scheduler = segmenter_spec("destseg").optimizer(net, 10, 1e-3, 1e-4, {**TINY, "head_lr": 2e-3})
    lrs = []
    for _ in range(10):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert [s > 0 for s, _ in lrs] == [True] * 6 + [False] * 4  # student_fraction 0.6
    assert [h > 0 for _, h in lrs] == [False] * 6 + [True] * 4
    assert lrs[0][0] == pytest.approx(1e-3) and lrs[6][1] == pytest.approx(2e-3)
    teacher = {id(p) for p in net.teacher.parameters()}
    assert not any(id(p) in teacher for group in optimizer.param_groups for p in group["params"])
    # --warmup-steps ramps each stage up from its start (at most a fifth of the stage): 20 steps, 12 + 8
    optimizer, scheduler = segmenter_spec("destseg").optimizer(net, 20, 1e-3, 1e-4, TINY, 5)
    warm = []
    for _ in range(20):
        warm.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert [round(s / 1e-3, 3) for s, _ in warm[:3]] == [0.5, 1.0, 1.0] and warm[3][0] < 1e-3
    assert [round(h / 1e-3, 3) for _, h in warm[12:14]] == [1.0, 1.0]  # 8 // 5 = 1 warm-up step: (0 + 1) / 1


def test_teacher_weights(tmp_path, monkeypatch, capsys):
    config = destseg.destseg_config(TINY)
    donor = destseg._resnet(3, config, (1, 2, 3))
    path = tmp_path / "teacher.pt"
    torch.save(donor.state_dict(), path)
    net = create_segmenter("destseg", 1, TINY, weights=str(path))
    assert torch.allclose(net.teacher.conv1.weight, donor.conv1.weight.sum(1, keepdim=True))  # RGB summed to grey

    real = destseg._resnet

    def no_cache(in_channels, cfg, out_indices, pretrained=False):
        if pretrained:
            raise OSError("not in the cache")
        return real(in_channels, cfg, out_indices)

    monkeypatch.setattr(destseg, "_resnet", no_cache)
    monkeypatch.setattr(destseg, "_warned", set())
    paper = {k: v for k, v in TINY.items() if k not in ("widths", "stem_width", "teacher")}
    create_segmenter("destseg", 1, paper)  # training, no --weights: random teacher, said loudly
    assert "RANDOMLY INITIALISED" in capsys.readouterr().err
    create_segmenter("destseg", 1, paper, rebuild=True)  # a model file's network: nothing looked up, no warning
    assert capsys.readouterr().err == ""
    with pytest.raises(InputError, match="--weights pretrained"):
        create_segmenter("destseg", 1, paper, weights="pretrained")


def _segment(toy_root, preset, out, *extra) -> int:
    return main(["segment", "--data", str(toy_root), "--category", "toy", "--config", preset, "--partitions", "1",
                 "--device", "cpu", "--quiet", "--model", "destseg", "--steps", "6", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def destseg_run(toy_root, fast_presets, tmp_path_factory):
    out = tmp_path_factory.mktemp("destseg") / "run"
    assert _segment(toy_root, fast_presets["segment"], out, "--aug", "perlin") == 0
    return out


def test_segment_destseg_reports_every_metric(destseg_run):
    results = json.loads((destseg_run / "results.json").read_text())
    assert results["arms"] == ["none", "perlin"] and results["metrics"] == list(METRIC_KEYS)
    part = results["partitions"][0]
    for arm in ("none", "perlin"):
        assert set(part["arms"][arm]) == set(METRIC_KEYS)
        assert all(0.0 <= v <= 1.0 for v in part["arms"][arm].values()), part["arms"][arm]
        assert set(results["summary"]["arms"][arm]) == set(METRIC_KEYS)
    for key, test in part["tests"]["perlin"].items():  # paired intervals against real-only
        assert test["test"] == "paired_bootstrap" and test["low"] <= test["high"], key
    assert part["runs"]["perlin"]["synthetic_samples_seen"] == 6 * 8
    model, meta = load_model(destseg_run / "P1" / "perlin" / "model.pt", "cpu")
    assert meta["architecture"]["name"] == "destseg" and 0.0 <= meta["threshold"]["pixel"] <= 1.0


def test_same_seed_same_numbers(destseg_run, toy_root, fast_presets, tmp_path):
    assert _segment(toy_root, fast_presets["segment"], tmp_path / "again", "--aug", "perlin") == 0
    first, second = (json.loads((out / "results.json").read_text())["partitions"][0]
                     for out in (destseg_run, tmp_path / "again"))
    assert first["arms"] == second["arms"] and first["tests"] == second["tests"]


def test_resume_reads_the_finished_arms_back(destseg_run, toy_root, fast_presets):
    before = json.loads((destseg_run / "results.json").read_text())
    stamps = {arm: (destseg_run / "P1" / arm / FINISHED).stat().st_mtime_ns for arm in ("none", "perlin")}
    assert _segment(toy_root, fast_presets["segment"], destseg_run, "--aug", "perlin", "--resume") == 0
    after = json.loads((destseg_run / "results.json").read_text())
    assert stamps == {arm: (destseg_run / "P1" / arm / FINISHED).stat().st_mtime_ns for arm in ("none", "perlin")}
    assert after["partitions"][0]["arms"] == before["partitions"][0]["arms"]
    assert all(after["partitions"][0]["runs"][arm]["read_back"] for arm in ("none", "perlin"))


def test_predict_and_export_a_destseg_model(destseg_run, toy_root, tmp_path, capsys):
    model_file = destseg_run / "P1" / "perlin" / "model.pt"
    images = sorted((toy_root / "toy" / "test").rglob("*.png"))
    images = [p for p in images if "ground_truth" not in p.parts][:3]
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_file), "--images", *map(str, images), "--out", str(out),
                 "--device", "cpu"]) == 0
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(r["file"]).name for r in rows] == [p.name for p in images]
    model, meta = load_model(model_file, "cpu")
    for row, path in zip(rows, images):
        mask = np.array(Image.open(out / "masks" / f"{path.stem}_mask.png"))
        assert mask.shape == tuple(meta["resolution"]) and (mask == 255).sum() == int(row["defect_pixels"])
        assert (out / "overlays" / f"{path.stem}.png").is_file()
    x = torch.rand((2, meta["channels"], *meta["resolution"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).numpy()
    # ONNX (torch.export, a quarter of a minute here); TorchScript is the same generic trace as the other
    # segmenters' (tests/test_predict_export.py)
    target = tmp_path / "m.onnx"
    assert main(["export", "--model", str(model_file), "--format", "onnx", "--out", str(target)]) == 0
    assert "max abs difference" in capsys.readouterr().out
    import onnxruntime

    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)
