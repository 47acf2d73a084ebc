"""Shared fixtures: the toy dataset is written once per test session."""

from pathlib import Path

import pytest
import torch
import yaml

from inspect_train.data.toy import write_toy_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A toy dataset root (category `toy`), shared read-only by every test."""
    return write_toy_dataset(tmp_path_factory.mktemp("toy-data"), seed=0)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """The tiny classify preset (models saved), as a path: the classify and open-set tests share it."""
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    write_tiny_classify_config(path, save_models=True)
    return str(path)


@pytest.fixture(scope="session")
def fast_presets(tmp_path_factory):
    """segment-tiny and detect-tiny as the tests run them, as paths: the shipped presets with 20 bootstrap resamples
    instead of 200. The paired tests still run (on less work); resampling costs half of a short tiny run."""
    folder = tmp_path_factory.mktemp("presets")
    out = {}
    for task in ("segment", "detect"):
        config = yaml.safe_load((CONFIGS / f"{task}-tiny.yaml").read_text())
        config["bootstrap_resamples"] = 20
        out[task] = str(folder / f"{task}-tiny.yaml")
        Path(out[task]).write_text(yaml.safe_dump(config))
    return out


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests run tiny networks, which are fastest on one intra-op thread (no OpenMP oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# timm's own test-size ResNet (basic and bottleneck blocks, 0.37M parameters): a classify run through the same code
# path as resnet18 (any timm name is built, trained, saved and exported alike) at a fifth of resnet18's time, whose
# 11M-parameter Adam steps, model files and evaluation were most of each tiny run. resnet18 itself is trained in
# test_ship.py and predicted/exported in test_predict_export.py.
TINY_MODEL = "test_resnet"

TINY_CLASSIFY = """
resolution: 32
model: {model}
batch_size: 8
steps: 3
warmup_steps: 0
log_every: 1
grid_every: 2
save_models: {save_models}
bootstrap_resamples: 20
generators:
  dfmgan:
    config: dfmgan-tiny
    backbone_steps: 1
    defect_steps: 1
"""


def write_tiny_classify_config(path, save_models: bool = False, model: str = TINY_MODEL):
    """A classify preset at test size (a tiny timm ResNet at 32x32, 3 steps; 1-step DFMGAN stages): the real code
    path."""
    path.write_text(TINY_CLASSIFY.format(save_models=str(save_models).lower(), model=model))
    return path
