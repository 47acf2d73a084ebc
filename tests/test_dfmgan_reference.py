"""DFMGAN choices taken from the reference: R1 weight rule, no stage-2 EMA ramp-up, and the thin-mask option."""

import pytest
import torch

from generators.dfmgan.api import fit_backbone, fit_defect, load_config
from generators.dfmgan.checkpoint import load_checkpoint
from generators.dfmgan.config import check_config
from generators.dfmgan.networks import Generator, count_params
from generators.dfmgan.training import r1_weight
from inspect_train.data.category import load_category
from inspect_train.errors import InputError


def test_r1_auto_is_the_reference_rule():
    assert r1_weight({"r1_gamma": "auto", "batch": 16}, 256 * 256) == pytest.approx(0.8192)  # the paper's 256 run
    assert r1_weight({"r1_gamma": "auto", "batch": 8}, 64 * 64) == pytest.approx(0.1024)
    assert r1_weight({"r1_gamma": "auto", "batch": 8}, 192 * 64) == pytest.approx(0.3072)  # H x W, not a square
    assert r1_weight({"r1_gamma": 0.5, "batch": 8}, 64 * 64) == 0.5
    with pytest.raises(InputError, match="r1_gamma"):
        r1_weight({"r1_gamma": "big", "batch": 8}, 64 * 64)


@pytest.mark.parametrize("name", ["dfmgan-tiny", "dfmgan-64", "dfmgan-128", "dfmgan-256"])
def test_presets_follow_the_reference(name):
    config = load_config(name)
    assert config["stage1"]["r1_gamma"] == config["stage2"]["r1_gamma"] == "auto"
    assert config["stage2"].get("ema_rampup") is None  # stage 2 starts from trained networks
    assert config["stage1"]["ema_rampup"]  # stage 1 starts from scratch


def _mask(G, seed=0):
    g = torch.Generator().manual_seed(seed)
    z, zd = torch.randn(4, G.z_dim, generator=g), torch.randn(4, G.z_dim, generator=g)
    with torch.no_grad():
        return G.synthesize_defect(G.mapping(z), G.defect_mapping(zd), G.make_noise(4, "cpu", g), with_good=False)


def test_mask_refine_is_off_by_default_and_starts_at_the_coarse_mask():
    config = load_config("dfmgan-tiny")
    plain = Generator(config, 3)
    plain.add_defect_modules()
    assert plain.mask_refiners is None
    refined = Generator({**config, "mask_refine": True}, 3)
    refined.add_defect_modules()
    levels = [r for r in refined.resolutions if r > refined.res_start]
    assert sorted(int(r) for r in refined.mask_refiners) == levels and levels
    assert count_params(refined.stage2_modules()) > count_params(plain.stage2_modules())
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("mask_refiners.") for k in missing)
    image_p, mask_p, _ = _mask(plain)
    image_r, mask_r, _ = _mask(refined)
    assert torch.allclose(mask_p, mask_r) and torch.allclose(image_p, image_r)
    # a refiner that fires changes the mask at full resolution
    with torch.no_grad():
        refined.mask_refiners[str(levels[-1])].bias.fill_(-100.0)
    assert (_mask(refined)[1] < 0).all() and not (mask_p < 0).all()


def test_mask_refine_must_be_a_boolean():
    with pytest.raises(InputError, match="mask_refine"):
        check_config({**load_config("dfmgan-tiny"), "mask_refine": "yes"})


def test_mask_refiners_train_in_stage2_on_an_older_backbone(toy_root, tmp_path):
    toy = load_category(toy_root, "toy", size=(32, 32))
    tiny = load_config("dfmgan-tiny")
    backbone = fit_backbone(toy.train_good.images[:16], tiny, tmp_path / "bb", steps=1, progress=False)
    images, masks = toy.defects["hole"].images[:4], toy.defects["hole"].masks[:4]
    path = fit_defect(backbone, images, masks, "hole", tmp_path / "s2", config={**tiny, "mask_refine": True},
                      steps=2, progress=False)
    state = load_checkpoint(path)
    assert state["config"]["mask_refine"] is True
    weights = [v for k, v in state["G"].items() if k.startswith("mask_refiners.") and k.endswith("conv.weight")]
    assert weights and all(w.abs().sum() > 0 for w in weights)  # zero at the start, trained since
    n_opt = sum(len(g["params"]) for g in state["opt_G"]["param_groups"])
    assert n_opt == sum(1 for k in state["G"] if k.split(".")[0] in ("defect_mapping", "res_blocks", "to_mask",
                                                                      "mask_refiners") and not k.endswith("w_avg"))
