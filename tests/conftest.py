"""Shared fixtures: the toy dataset is written once per test session."""

import pytest
import torch

from inspect_train.data.toy import write_toy_dataset

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A toy dataset root (category `toy`), shared read-only by every test."""
    return write_toy_dataset(tmp_path_factory.mktemp("toy-data"), seed=0)
