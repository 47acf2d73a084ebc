"""Shared fixtures: the toy dataset is written once per test session."""

import pytest
import torch

from inspect_train.data.toy import write_toy_dataset



@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A toy dataset root (category `toy`), shared read-only by every test."""
    return write_toy_dataset(tmp_path_factory.mktemp("toy-data"), seed=0)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests run tiny networks, which are fastest on one intra-op thread (no OpenMP oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
