"""`torchrun --nproc_per_node 2 -m inspect_train classify|segment|detect` on 2 gloo CPU processes: exit 0, one
results.json with the usual schema, the global batch's schedule, identical trained weights on both ranks."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inspect_train.protocol import get_partition, read_manifest
from inspect_train.report import read_results
from inspect_train.tasks.common import DUMP_ENV
from conftest import write_tiny_classify_config

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path, dump: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "inspect_train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", DUMP_ENV: str(dump),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=150, env=env)


def same_weights(dump: Path, name: str) -> None:
    r0, r1 = (torch.load(dump / f"{name}-rank{r}.pt") for r in (0, 1))
    assert r0.keys() == r1.keys()
    different = [k for k in r0 if not torch.equal(r0[k], r1[k])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def classify_run(toy_root, tmp_path_factory):
    """Classify with crop-paste, no --out: the timestamped folder must be one folder for both ranks."""
    work = tmp_path_factory.mktemp("ddp_classify")
    config = work / "tiny.yaml"
    write_tiny_classify_config(config, save_models=True)
    proc = torchrun(["classify", "--data", str(toy_root), "--category", "toy", "--config", str(config),
                     "--aug", "crop-paste", "--partitions", "1", "--quiet", "--device", "cpu"], work, work / "dump")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((work / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 0's timestamped folder, broadcast to rank 1
    return proc, runs[0], work / "dump"


def test_classify_two_processes_write_once(classify_run, toy_root):
    proc, out, _ = classify_run
    assert proc.stdout.count("results: ") == 1 and proc.stdout.count("P1: training") == 1
    results = read_results(out)
    assert results["task"] == "classify" and results["arms"] == ["none", "crop-paste"]
    assert results["config"]["run"]["processes"] == 2 and results["schedule"]["batch_size"] == 8
    part = results["partitions"][0]
    for arm in ("none", "crop-paste"):
        assert 0.0 <= part["arms"][arm]["accuracy"] <= 1.0 and part["arms"][arm]["n_test"] > 0
    # The global batch: 3 steps x 8 (4 real + 4 synthetic: 2 + 2 per rank) whatever the process count.
    assert part["runs"]["crop-paste"]["synthetic_samples_seen"] == 3 * 4
    part_split = get_partition(read_manifest(out / "manifest.json"), 1)
    pool = sum(len(v["base"]) for v in part_split["defects"].values())
    assert part["runs"]["none"]["epochs"] == round(3 * 8 / pool, 2)
    used = {tuple(x) for x in part["real_images_used"]}
    assert len(used) > 4  # both ranks' draws, not rank 0's alone
    assert sorted(p.name for p in (out / "P1").iterdir()) == ["crop-paste", "none"]
    assert len(list((out / "tb" / "P1" / "none").glob("events.*"))) == 1


@pytest.mark.parametrize("arm", ["none", "crop-paste"])
def test_classify_ranks_hold_identical_weights(classify_run, arm):
    _, out, dump = classify_run
    same_weights(dump, f"P1-{arm}")
    saved = torch.load(out / "P1" / arm / "model.pt")["state_dict"]  # the timm net's own keys (no "net.")
    rank1 = torch.load(dump / f"P1-{arm}-rank1.pt")
    assert all(torch.equal(saved[k], rank1[f"net.{k}"]) for k in saved)
    init = torch.load(dump / "P1-none-rank0.pt")
    if arm != "none":  # same initial weights, other batches: the arms must have moved apart
        assert any(not torch.equal(init[k], rank1[k]) for k in init if k.endswith("weight"))


def test_segment_two_processes_on_toy(tmp_path, fast_presets):
    """Without --data: rank 0 writes the toy dataset, rank 1 waits for it (segment-tiny, 20 bootstrap resamples)."""
    out = tmp_path / "seg"
    proc = torchrun(["segment", "--config", fast_presets["segment"], "--aug", "perlin", "--model", "unet",
                     "--partitions", "1", "--steps", "2",
                     "--batch-size", "8", "--threads", "1", "--quiet", "--device", "cpu", "--out", str(out)],
                    tmp_path, tmp_path / "dump")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results: ") == 1
    results = read_results(out)
    assert results["task"] == "segment" and results["config"]["run"]["processes"] == 2
    part = results["partitions"][0]
    assert part["runs"]["perlin"]["synthetic_samples_seen"] == 2 * 4 and 0.0 <= part["arms"]["perlin"]["pixel_ap"] <= 1.0
    for arm in ("none", "perlin"):
        same_weights(tmp_path / "dump", f"P1-{arm}")
        saved = torch.load(out / "P1" / arm / "model.pt")["state_dict"]
        rank1 = torch.load(tmp_path / "dump" / f"P1-{arm}-rank1.pt")
        assert all(torch.equal(saved[k], rank1[f"net.{k}"]) for k in saved)



def test_detect_two_processes_on_toy(tmp_path, fast_presets):
    """Rank 0 alone runs the COCO evaluator: it must not wait to gather from rank 1, which waits at a barrier."""
    out = tmp_path / "det"
    proc = torchrun(["detect", "--config", fast_presets["detect"], "--aug", "crop-paste", "--partitions", "1",
                     "--steps", "2", "--batch-size", "4",
                     "--threads", "1", "--quiet", "--device", "cpu", "--out", str(out)], tmp_path, tmp_path / "dump")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results: ") == 1
    results = read_results(out)
    assert results["task"] == "detect" and results["config"]["run"]["processes"] == 2
    part = results["partitions"][0]
    assert part["runs"]["crop-paste"]["synthetic_samples_seen"] == 2 * 2
    for arm in ("none", "crop-paste"):
        assert 0.0 <= part["arms"][arm]["map_50"] <= 1.0
        same_weights(tmp_path / "dump", f"P1-{arm}")
