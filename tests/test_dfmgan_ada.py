"""Adaptive discriminator augmentation: p follows D's overfitting signal, applies per sample, survives resume."""

import torch

from generators.dfmgan.augment import AdaptiveAugment, discriminator_augment


def _ada(**kw):
    return AdaptiveAugment("color,translation,cutout", 3, **{"target": 0.6, "kimg": 0.064, "interval": 4,
                                                            "batch": 8, **kw})


def test_p_rises_when_d_is_sure_of_the_reals_and_stays_at_zero_when_not():
    overfit, healthy = _ada(), _ada()
    for _ in range(16):
        overfit.observe(torch.full((8,), 3.0))  # every real scored real: sign mean 1 > 0.6
        healthy.observe(torch.tensor([1.0, -1.0] * 4))  # sign mean 0 < 0.6
    # 4 adjustments of 8 * 4 / 64 = 0.5 each, clamped to [0, 1]
    assert overfit.p == 1.0 and healthy.p == 0.0
    for _ in range(4):
        overfit.observe(torch.full((8,), -1.0))
    assert overfit.p == 0.5, "and falls again when D stops overfitting"
    assert _ada().p == 0.0, "p starts at 0"


def test_p_is_applied_per_sample():
    x = torch.rand(64, 3, 16, 16)
    ada = _ada()
    assert torch.equal(ada(x), x), "p = 0: D sees the images as they are"
    ada.p = 1.0
    assert all(not torch.equal(a, b) for a, b in zip(ada(x), x)), "p = 1: every sample augmented"
    ada.p = 0.3
    torch.manual_seed(0)
    changed = sum(not torch.equal(a, b) for a, b in zip(ada(x), x))
    assert 0 < changed < 64


def test_state_round_trip_mid_interval():
    a, b = _ada(), _ada()
    for _ in range(6):
        a.observe(torch.full((8,), 2.0))
    b.load_state_dict(a.state_dict())
    for ada in (a, b):
        ada.observe(torch.full((8,), 2.0))
        ada.observe(torch.full((8,), 2.0))
    assert a.p == b.p > 0.5


def test_config_chooses_fixed_or_adaptive():
    fn, ada = discriminator_augment({"augment": "translation"}, 1, batch=8)
    assert ada is None and fn(torch.zeros(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    fn, ada = discriminator_augment({"augment": "translation", "ada_target": 0.6, "ada_kimg": 2}, 1, batch=8)
    assert fn is ada and ada.step_size == 8 * 4 / 2000
