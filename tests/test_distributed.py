"""Gradient averaging and DDP wrapping across two gloo processes on the CPU."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from inspect_train.distributed import DistContext, init_distributed, shutdown
from inspect_train.errors import InputError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.full((2, 4), float(rank + 1))
    model(x).sum().backward()
    ctx.average_gradients(model.parameters())
    torch.save({"grad": model.weight.grad.clone(), "mean": ctx.mean(torch.tensor(float(rank)))}, f"{out_dir}/rank{rank}.pt")
    shutdown(ctx)


def test_average_gradients_over_two_processes(tmp_path):
    port = free_port()
    mp.start_processes(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # d(sum(w.x))/dw = sum over the batch of x: rank 0 gives 2, rank 1 gives 4; the mean is 3 on both.
    assert torch.allclose(r0["grad"], torch.full((1, 4), 3.0))
    assert torch.equal(r0["grad"], r1["grad"])
    assert float(r0["mean"]) == pytest.approx(0.5)


def test_single_process_is_a_no_op():
    ctx = DistContext()
    model = torch.nn.Linear(2, 1)
    assert ctx.wrap(model) is model
    assert ctx.local_batch(8) == 8
    with pytest.raises(InputError):
        DistContext(world_size=3).local_batch(8)
