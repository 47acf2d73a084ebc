"""Path-length regularisation of G (the reference's default in both DFMGAN stages): the penalty's value, when it
runs, G's Adam correction, exact resume with its running mean, and the presets that turn it on."""

import copy
import math

import pytest
import torch

from generators.dfmgan.api import fit_backbone, fit_defect, load_config
from generators.dfmgan.checkpoint import load_checkpoint
from generators.dfmgan.config import check_config
from generators.dfmgan.path_length import PL_DECAY, PathLength
from inspect_train.data.category import load_category
from inspect_train.errors import InputError


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


def _with_pl(config: dict, weight: float = 2.0, every: int = 2) -> dict:
    out = copy.deepcopy(config)
    for stage in ("stage1", "stage2"):
        out[stage].update(pl_weight=weight, pl_interval=every)
    return out


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_penalty_is_the_deviation_of_the_path_lengths_from_their_running_mean():
    """A linear 'generator' (image = M applied to the sum of the block styles): every block's gradient is M^T y,
    so each length is |M^T y| and the running mean moves PL_DECAY of the way from 0 to the batch mean."""
    torch.manual_seed(0)
    n, blocks, w_dim, h, w = 3, 4, 5, 2, 3
    matrix = torch.randn(w_dim, h * w, requires_grad=True)  # the weights the penalty trains
    ws = torch.randn(n, blocks, w_dim, requires_grad=True)
    images = (ws.sum(dim=1) @ matrix).view(n, 1, h, w)
    pl = PathLength({"pl_weight": 2, "pl_interval": 4}, torch.device("cpu"))
    torch.manual_seed(1)
    penalty = pl.penalty(images, ws)
    torch.manual_seed(1)
    y = torch.randn(n, 1, h, w).view(n, -1) / math.sqrt(h * w)
    lengths = (y @ matrix.detach().T).norm(dim=1)
    mean = PL_DECAY * lengths.mean()
    torch.testing.assert_close(pl.mean, mean)
    torch.testing.assert_close(penalty, (lengths - mean).square().mean())
    assert penalty.requires_grad  # it reaches the weights
    assert pl.scale == 8 and pl.lazy_interval == 4 and pl.due(8) and not pl.due(9)


def test_off_by_default_and_in_configs_made_before_the_keys():
    pl = PathLength({}, torch.device("cpu"))
    assert not pl.enabled and pl.lazy_interval is None and not pl.due(0)


@pytest.mark.parametrize("stage_values, word", [({"pl_weight": -1}, "at least 0"), ({"pl_interval": 0}, "at least 1"),
                                                ({"pl_interval": 2.5}, "whole number"),
                                                ({"pl_weight": "big"}, "must be a number")])
def test_bad_settings_are_refused_by_name(stage_values, word):
    config = load_config("dfmgan-tiny")
    config["stage2"].update(stage_values)
    with pytest.raises(InputError, match=f"stage2.*{word}"):
        check_config(config)


def test_presets_follow_the_reference_at_paper_scale():
    for name in ("dfmgan-128", "dfmgan-256"):
        config = load_config(name)
        for stage in ("stage1", "stage2"):
            assert (config[stage]["pl_weight"], config[stage]["pl_interval"]) == (2, 4), (name, stage)
        assert config["stage2"]["ada_kimg"] == 100  # the reference's ADA speed when it resumes for stage 2
    for name in ("dfmgan-tiny", "dfmgan-64"):  # the CPU presets keep what their README rows were measured with
        assert load_config(name)["stage1"]["pl_weight"] == load_config(name)["stage2"]["pl_weight"] == 0


def test_stage1_runs_it_every_interval_with_adams_lazy_correction(toy, tmp_path, monkeypatch):
    tiny = load_config("dfmgan-tiny")
    calls = []
    real = PathLength.penalty

    def spy(self, images, ws):
        calls.append((images.shape[0], tuple(ws.shape)))
        return real(self, images, ws)

    monkeypatch.setattr(PathLength, "penalty", spy)
    good = toy.train_good.images[:24]
    off = load_checkpoint(fit_backbone(good, tiny, tmp_path / "off", steps=5, seed=4, progress=False))
    assert not calls and "pl" not in off
    on = load_checkpoint(fit_backbone(good, _with_pl(tiny), tmp_path / "on", steps=5, seed=4, progress=False))
    batch = int(tiny["stage1"]["batch"])
    assert [c[0] for c in calls] == [batch // 2] * 3  # steps 0, 2, 4, on half a batch
    assert calls[0][1] == (batch // 2, int(math.log2(32)) - 1, int(tiny["w_dim"]))  # one style per block, 4..32
    assert float(on["pl"]["mean"]) > 0
    assert not _equal_states(on["G"], off["G"])
    lr, (b1, b2) = float(tiny["stage1"]["lr"]), tiny["stage1"]["betas"]
    group = on["opt_G"]["param_groups"][0]
    assert group["lr"] == pytest.approx(lr * 2 / 3) and group["betas"][1] == pytest.approx(b2 ** (2 / 3))
    assert off["opt_G"]["param_groups"][0]["lr"] == pytest.approx(lr)


def test_stage1_resume_restores_the_running_mean(toy, tmp_path):
    config = _with_pl(load_config("dfmgan-tiny"))
    good = toy.train_good.images[:24]
    straight = load_checkpoint(fit_backbone(good, config, tmp_path / "a", steps=5, seed=7, progress=False))
    fit_backbone(good, config, tmp_path / "b", steps=3, seed=7, progress=False)
    resumed = load_checkpoint(fit_backbone(good, config, tmp_path / "b", steps=5, seed=7, resume=True,
                                           progress=False))
    for key in ("G", "G_ema", "D"):
        assert _equal_states(straight[key], resumed[key]), key
    assert torch.equal(straight["pl"]["mean"], resumed["pl"]["mean"])


def test_stage2_trains_only_the_defect_modules_with_it(toy, tmp_path):
    tiny = load_config("dfmgan-tiny")
    backbone = fit_backbone(toy.train_good.images[:24], tiny, tmp_path / "bb", steps=2, progress=False)
    images, masks = toy.defects["hole"].images[:5], toy.defects["hole"].masks[:5]
    config = _with_pl(tiny)
    off = load_checkpoint(fit_defect(backbone, images, masks, "hole", tmp_path / "off", config=tiny, steps=3,
                                     seed=2, progress=False))
    on = load_checkpoint(fit_defect(backbone, images, masks, "hole", tmp_path / "on", config=config, steps=3,
                                    seed=2, progress=False))
    stage1 = load_checkpoint(backbone)
    stage2 = ("defect_mapping.", "res_blocks.", "to_mask.")
    assert all(torch.equal(on["G"][k], stage1["G"][k]) for k in on["G"] if not k.startswith(stage2))
    assert not _equal_states(on["G"], off["G"])
    assert float(on["pl"]["mean"]) > 0 and "pl" not in off
    # resumed from step 1 with its running mean: the uninterrupted run's weights
    fit_defect(backbone, images, masks, "hole", tmp_path / "b", config=config, steps=1, seed=2, progress=False)
    resumed = load_checkpoint(fit_defect(backbone, images, masks, "hole", tmp_path / "b", config=config, steps=3,
                                         seed=2, resume=True, progress=False))
    for key in ("G", "G_ema", "D", "D_match"):
        assert _equal_states(on[key], resumed[key]), key


def test_bf16_autocast_trains_with_it(toy, tmp_path):
    config = _with_pl(load_config("dfmgan-tiny"), every=1)
    for stage in ("stage1", "stage2"):
        config[stage]["precision"] = "bf16"
    backbone = fit_backbone(toy.train_good.images[:16], config, tmp_path / "bb", steps=2, progress=False)
    state = load_checkpoint(backbone)
    assert math.isfinite(float(state["pl"]["mean"]))
    assert all(v.dtype == torch.float32 for v in state["G"].values() if v.is_floating_point())
    images, masks = toy.defects["hole"].images[:4], toy.defects["hole"].masks[:4]
    defect = load_checkpoint(fit_defect(backbone, images, masks, "hole", tmp_path / "s2", config=config, steps=2,
                                        progress=False))
    assert math.isfinite(float(defect["pl"]["mean"]))
