"""The downstream training loop reads its losses from the device once per log step, not every step."""

import itertools

import pytest
import torch

from inspect_train.tasks.common import train_fixed_steps


def test_losses_are_read_once_per_log_step(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    batches = itertools.repeat(torch.randn(8, 3))

    def step_fn(net, batch):
        loss = net(batch).square().mean()
        return loss, {"aux": loss.detach() * 2}

    reads = []
    original = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__", lambda self: reads.append(1) or original(self))
    last = train_fixed_steps(model, batches, 10, step_fn, torch.optim.SGD(model.parameters(), lr=0.01),
                             log_every=5, progress=False)
    assert len(reads) == 2 * 2  # two log steps x two scalars, instead of two reads every step
    assert last["aux"] == pytest.approx(2 * last["loss"])
