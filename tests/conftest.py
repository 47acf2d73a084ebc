"""Shared fixtures: the toy dataset is written once per test session."""

import pytest
import torch

from inspect_train.data.toy import write_toy_dataset


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


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests run tiny networks, which are fastest on one intra-op thread (no OpenMP oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_CLASSIFY = """
resolution: 32
model: resnet18
batch_size: 8
steps: 3
warmup_steps: 0
log_every: 1
grid_every: 2
save_models: {save_models}
bootstrap_resamples: 50
generators:
  dfmgan:
    config: dfmgan-tiny
    backbone_steps: 1
    defect_steps: 1
"""


def write_tiny_classify_config(path, save_models: bool = False):
    """A classify preset at test size (ResNet-18 at 32x32, 3 steps; 1-step DFMGAN stages): the real code path."""
    path.write_text(TINY_CLASSIFY.format(save_models=str(save_models).lower()))
    return path
