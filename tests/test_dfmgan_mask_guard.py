"""The stage-2 empty-mask guard: it reads G_ema's samples only (training is unchanged), and a G_ema whose masks
collapsed at the last step is put back to the latest check under the limit, recorded in the checkpoint."""

import copy

import pytest
import torch

from generators.dfmgan.api import fit_backbone, fit_defect, load_config
from generators.dfmgan.checkpoint import load_checkpoint
from generators.dfmgan.mask_guard import EmptyMaskGuard
from generators.dfmgan.networks import Generator
from inspect_train.data.category import load_category


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


def tiny_generator() -> Generator:
    config = load_config("dfmgan-tiny")
    torch.manual_seed(0)
    G = Generator(config, 3)
    G.add_defect_modules()
    return G.eval().requires_grad_(False)


def test_a_collapse_at_the_end_goes_back_to_the_last_healthy_check():
    G = tiny_generator()
    said = []
    guard = EmptyMaskGuard(G, {"mask_guard_every": 2, "empty_mask_limit": 0.5}, "cpu", "crack", n=16, say=said.append)
    guard.after_step(1, last=False)  # not a check step
    guard.after_step(2, last=False)
    healthy = copy.deepcopy(G.state_dict())
    assert guard.history == [[2, 0.0]] and guard.kept[0] == 2
    with torch.no_grad():
        G.to_mask.bias.fill_(-1e4)  # every mask logit negative: every mask empty
    guard.after_step(3, last=True)
    assert guard.history[-1] == [3, 1.0]
    assert all(torch.equal(G.state_dict()[k], healthy[k]) for k in healthy)
    assert said and "100% of the masks are empty at step 3" in said[0] and "step 2 (0% empty)" in said[0]
    assert guard.record() == {"every": 2, "limit": 0.5, "checks": [[2, 0.0], [3, 1.0]], "collapsed_at": 3,
                              "g_ema_from_step": 2}


def test_a_collapse_with_no_healthy_check_is_kept_and_said():
    G = tiny_generator()
    with torch.no_grad():
        G.to_mask.bias.fill_(-1e4)
    said = []
    guard = EmptyMaskGuard(G, {"mask_guard_every": 1, "empty_mask_limit": 0.5}, "cpu", "crack", n=8, say=said.append)
    guard.after_step(1, last=True)
    assert float(G.to_mask.bias) == -1e4 and "no check passed" in said[0]
    assert guard.record()["collapsed_at"] is None
    off = EmptyMaskGuard(G, {"mask_guard_every": 0}, "cpu", "crack")
    off.after_step(1, last=True)
    assert off.record() is None and off.history == []


def test_the_guard_does_not_change_training(toy, tmp_path):
    """Checks at every step draw from their own generators: G, D and G_ema end bit for bit as without the guard."""
    tiny = load_config("dfmgan-tiny")
    backbone = fit_backbone(toy.train_good.images[:40], tiny, tmp_path / "bb", steps=2, progress=False)
    images, masks = toy.defects["hole"].images[:5], toy.defects["hole"].masks[:5]
    states = {}
    for every in (0, 1):
        config = copy.deepcopy(tiny)
        config["stage2"]["mask_guard_every"] = every
        states[every] = load_checkpoint(fit_defect(backbone, images, masks, "hole", tmp_path / f"g{every}",
                                                   config=config, steps=3, progress=False))
    for part in ("G", "G_ema", "D", "D_match"):
        assert states[0][part].keys() == states[1][part].keys()
        assert all(torch.equal(states[0][part][k], states[1][part][k]) for k in states[0][part]), part
    record = states[1]["mask_guard"]
    assert [step for step, _ in record["checks"]] == [1, 2, 3] and "mask_guard" not in states[0]
