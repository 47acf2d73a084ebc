"""DFMGAN training across 2 gloo CPU processes: identical weights on both ranks, one writer, exact resume."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data_root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import generators.dfmgan.train_backbone as tb
    import generators.dfmgan.train_defect as td
    from generators.dfmgan.api import fit_backbone, fit_defect, load_config
    from inspect_train.data.category import load_category
    from inspect_train.distributed import init_distributed, shutdown

    real_save = tb.save_on_main

    def save_and_dump(ctx, state, path):
        """The real (rank-0-only) save, plus every rank's weights to dump/ for the test to compare."""
        real_save(ctx, state, path)
        dump = Path(out) / "dump"
        dump.mkdir(exist_ok=True)
        keep = {k: state[k] for k in ("G", "G_ema", "D", "D_match", "step") if k in state}
        torch.save(keep, dump / f"{path.parent.name}_{path.stem}_step{state['step']}_rank{ctx.rank}.pt")

    tb.save_on_main = td.save_on_main = save_and_dump
    ctx = init_distributed("cpu")
    toy = load_category(data_root, "toy", size=(32, 32))
    config = load_config("dfmgan-tiny")  # global batch 8 -> 4 per rank
    for stage in ("stage1", "stage2"):  # path-length term on too: its running mean is averaged over the ranks
        config[stage].update(pl_weight=2, pl_interval=2)
    out = Path(out)
    bb = fit_backbone(toy.train_good.images[:40], config, out / "a", steps=4, progress=False, dist_ctx=ctx)
    fit_backbone(toy.train_good.images[:40], config, out / "b", steps=2, progress=False, dist_ctx=ctx)
    fit_backbone(toy.train_good.images[:40], config, out / "b", steps=4, resume=True, progress=False, dist_ctx=ctx)
    d = toy.defects["stain"]
    fit_defect(bb, d.images[:4], d.masks[:4], "stain", out / "a", steps=2, progress=False, dist_ctx=ctx)
    shutdown(ctx)


@pytest.fixture(scope="module")
def ddp_run(toy_root, tmp_path_factory):
    data = toy_root  # the session's toy dataset, read-only
    out = tmp_path_factory.mktemp("ddp_out")
    mp.start_processes(_worker, args=(2, free_port(), str(data), str(out)), nprocs=2, join=True,
                       start_method="spawn")
    return data, out


def _dump(out, name, rank):
    return torch.load(out / "dump" / f"{name}_rank{rank}.pt")


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["a_backbone_step4", "a_defect_stain_step2"])
def test_ranks_hold_identical_weights(ddp_run, name):
    _, out = ddp_run
    r0, r1 = _dump(out, name, 0), _dump(out, name, 1)
    for key in ("G", "G_ema", "D") + (("D_match",) if "defect" in name else ()):
        assert _equal(r0[key], r1[key]), key
    start = torch.load(out / "dump" / "a_backbone_step4_rank0.pt")
    if "defect" in name:  # the stage-2 modules moved, the frozen backbone did not
        moved = [k for k in r0["G"] if k.startswith(("res_blocks", "to_mask", "defect_mapping"))
                 and not torch.equal(r0["G"][k], r0["G_ema"][k])]
        assert moved
        assert all(torch.equal(r0["G"][k], start["G"][k]) for k in start["G"] if k.startswith("blocks"))


def test_only_rank_zero_writes(ddp_run):
    _, out = ddp_run
    assert sorted(p.name for p in (out / "a").glob("*.pt")) == ["backbone.pt", "defect_stain.pt"]
    assert len(list((out / "a" / "tb").glob("events.*"))) == 1
    from generators.dfmgan.checkpoint import load_checkpoint

    state = load_checkpoint(out / "a" / "backbone.pt")
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2 and state["step"] == 4
    assert not torch.equal(state["rng_ranks"][0]["cpu"], state["rng_ranks"][1]["cpu"])  # per-rank streams


def test_resume_across_processes_is_exact(ddp_run):
    _, out = ddp_run
    straight, resumed = _dump(out, "a_backbone_step4", 0), _dump(out, "b_backbone_step4", 0)
    for key in ("G", "G_ema", "D"):
        assert _equal(straight[key], resumed[key]), key


def test_torchrun_cli_fit_backbone(ddp_run, tmp_path):
    data, _ = ddp_run
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "inspect_train", "gan", "fit-backbone", "--data", str(data), "--category", "toy",
           "--config", "dfmgan-tiny", "--steps", "2", "--out", str(tmp_path / "run"), "--quiet", "--threads", "1",
           "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote ") == 1 and "2 processes" in proc.stdout
    from generators.dfmgan.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "run" / "backbone.pt", kind="backbone")
    assert state["world_size"] == 2 and state["step"] == 2
