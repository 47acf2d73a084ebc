"""The DRAEM-style network and its loss at tiny width."""

import pytest
import torch

from inspect_train.models.draem import Draem, DraemConfig, DraemLoss

TINY = DraemConfig(recon_width=8, recon_levels=3, disc_width=8, disc_levels=3)


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(channels):
    torch.manual_seed(0)
    model = Draem(channels, TINY)
    x = torch.rand(2, channels, 32, 48)
    reconstruction, logits = model(x)
    assert reconstruction.shape == x.shape
    assert logits.shape == (2, 1, 32, 48)
    assert TINY.divisor == 4
    assert DraemConfig().divisor == 32  # paper scale: 5 poolings in the discriminative U-Net


def test_paper_scale_widths():
    model = Draem(3)
    convs = [m for m in model.reconstructive.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 128 and convs[-1].out_channels == 1024
    convs = [m for m in model.discriminative.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].in_channels == 6 and convs[0].out_channels == 64 and convs[-1].out_channels == 512


def test_loss_terms():
    loss = DraemLoss(TINY)
    target = torch.rand(2, 1, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:8, 4:8] = 1
    sure = (mask * 2 - 1) * 20  # confident, correct logits
    perfect = loss(target, target, sure, mask)
    assert perfect["l2"].item() == pytest.approx(0.0, abs=1e-7)
    assert perfect["ssim"].item() == pytest.approx(0.0, abs=1e-4)
    assert perfect["focal"].item() < 1e-6
    wrong = loss(target, target, -sure, mask)
    assert wrong["focal"].item() > 1.0
    # Reconstruction errors inside a zero-weight region do not count.
    damaged = target.clone()
    damaged[mask.bool()] = 1 - damaged[mask.bool()]
    assert loss(damaged, target, sure, mask, weight=1 - mask)["l2"].item() == pytest.approx(0.0, abs=1e-7)
    assert loss(damaged, target, sure, mask)["l2"].item() > 0.01


def test_a_few_steps_learn_a_fixed_batch():
    torch.manual_seed(0)
    model = Draem(1, TINY)
    criterion = DraemLoss(TINY)
    good = torch.rand(4, 1, 16, 16) * 0.2 + 0.4
    mask = torch.zeros(4, 1, 16, 16)
    mask[:, :, 3:9, 5:12] = 1
    image = good * (1 - mask) + mask * 0.95
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        reconstruction, logits = model(image)
        terms = criterion(reconstruction, good, logits, mask)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        prob = torch.sigmoid(model(image)[1])
    assert prob[mask.bool()].mean() > prob[~mask.bool()].mean() + 0.3
