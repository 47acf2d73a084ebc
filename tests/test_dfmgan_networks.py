"""DFMGAN networks at tiny size: shapes, modulated-conv maths, residual-off == backbone, describe counts."""

import json

import pytest
import torch
import torch.nn.functional as F

from generators.dfmgan.api import load_config
from generators.dfmgan.networks import (Generator, ModulatedConv2d, build_discriminator, build_dmatch)
from inspect_train.cli import main


@pytest.fixture(scope="module")
def tiny():
    return load_config("dfmgan-tiny")


def _gen(config, channels, seed=0):
    torch.manual_seed(seed)
    G = Generator(config, channels)
    G.add_defect_modules()
    return G.eval()


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(tiny, channels):
    G = _gen(tiny, channels)
    n, res = 4, tiny["resolution"]
    z, zd = torch.randn(n, G.z_dim), torch.randn(n, G.z_dim)
    noise = G.make_noise(n, "cpu", torch.Generator().manual_seed(1))
    with torch.no_grad():
        img = G.synthesize(G.mapping(z), noise)
        defect, mask, good = G.synthesize_defect(G.mapping(z), G.defect_mapping(zd), noise)
    assert img.shape == defect.shape == good.shape == (n, channels, res, res)
    assert mask.shape == (n, 1, res, res)
    D, Dm = build_discriminator(tiny, channels), build_dmatch(tiny, channels)
    assert D(img).shape == (n,)
    assert Dm(torch.cat([img, torch.tanh(10 * mask)], 1)).shape == (n,)


def test_modulated_conv_matches_per_sample_weights():
    """The batched form must equal StyleGAN2's definition: per-sample weights w * s, demodulated."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 7, 3, w_dim=6)
    x, w = torch.randn(3, 5, 8, 8), torch.randn(3, 6)
    out = conv(x, w)
    styles = conv.affine(w)
    for i in range(3):
        weight = conv.weight * conv.w_gain * styles[i][None, :, None, None]
        weight = weight / weight.square().sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        ref = F.conv2d(x[i:i + 1], weight, padding=1)
        torch.testing.assert_close(out[i:i + 1], ref, atol=1e-5, rtol=1e-4)


def test_residual_off_equals_backbone(tiny):
    G = _gen(tiny, 3, seed=3)
    n = 6
    z, zd = torch.randn(n, G.z_dim), torch.randn(n, G.z_dim)
    noise = G.make_noise(n, "cpu", torch.Generator().manual_seed(5))
    with torch.no_grad():
        w = G.mapping(z)
        backbone = G.synthesize(w, noise)
        defect, mask, good = G.synthesize_defect(w, G.defect_mapping(zd), noise)
        defect_only, mask2, _ = G.synthesize_defect(w, G.defect_mapping(zd), noise, with_good=False)
    torch.testing.assert_close(good, backbone, atol=1e-5, rtol=0)
    torch.testing.assert_close(defect_only, defect, atol=1e-5, rtol=0)
    assert torch.equal(mask, mask2)
    # where some mask is on, the defect image must differ from its good image (the residual path is live)
    on = (mask >= 0).flatten(1).any(1)
    assert on.any()
    assert ((defect - good).abs().flatten(1).amax(1)[on] > 1e-4).all()


@pytest.mark.parametrize("wiring", ["injected", "residual"])
def test_residual_block_input_wiring(tiny, wiring):
    """Paper wiring ("injected"): the residual block above the first reads the defect-injected features of the
    resolution below (backbone features + residual inside the mask), so it sees the local background; the
    former wiring ("residual") reads the previous residual block's output alone. Both autograd and the
    no-grad sampling path compute the same images."""
    G = _gen({**tiny, "residual_input": wiring}, 1, seed=2)
    start = int(tiny["res_start"])
    seen = {}
    G.blocks[G.resolutions.index(start)].conv1.register_forward_hook(lambda m, i, o: seen.__setitem__("x", o))
    G.res_blocks[str(start)].register_forward_hook(lambda m, i, o: seen.__setitem__("res", o))
    G.to_mask.register_forward_hook(lambda m, i, o: seen.__setitem__("mask", o))
    G.res_blocks[str(2 * start)].register_forward_pre_hook(lambda m, args: seen.__setitem__("input", args[0]))
    n = 4
    z, zd = torch.randn(n, G.z_dim), torch.randn(n, G.z_dim)
    noise = G.make_noise(n, "cpu", torch.Generator().manual_seed(1))
    for with_good in (True, False):
        with torch.enable_grad():
            images, _, _ = G.synthesize_defect(G.mapping(z), G.defect_mapping(zd), noise, with_good=with_good)
        x = seen["x"][n:] if with_good else seen["x"]
        injected = x + seen["res"] * (seen["mask"] >= 0).float()
        expected = injected if wiring == "injected" else seen["res"]
        torch.testing.assert_close(seen["input"], expected)
        assert not torch.allclose(injected, seen["res"])
        with torch.no_grad():
            sampled, _, _ = G.synthesize_defect(G.mapping(z), G.defect_mapping(zd), noise, with_good=with_good)
        torch.testing.assert_close(sampled, images.detach(), atol=1e-5, rtol=0)


def test_style_mixing(tiny):
    """mix_styles: one style per block, switching from w to w_other at one block boundary with probability p;
    repeating one style per block is the plain pass, and a mixed style changes the image."""
    from generators.dfmgan.networks import mix_styles

    G = _gen(tiny, 1, seed=5)
    n, blocks = 3, len(G.resolutions)
    w, w2 = torch.randn(n, G.w_dim), torch.randn(n, G.w_dim)
    assert torch.equal(mix_styles(w, w2, blocks, 0.0), w[:, None].expand(-1, blocks, -1))
    torch.manual_seed(0)
    mixed = mix_styles(w, w2, blocks, 1.0)
    cut = int((mixed == w2[:, None]).all(-1).all(0).float().argmax())
    assert 1 <= cut < blocks and torch.equal(mixed[:, :cut], w[:, None].expand(-1, cut, -1))
    assert torch.equal(mixed[:, cut:], w2[:, None].expand(-1, blocks - cut, -1))
    cuts = set()
    for _ in range(40):
        m = mix_styles(w, w2, blocks, 0.5)
        cuts.add(blocks if torch.equal(m[:, -1], w) else int((m == w2[:, None]).all(-1).all(0).float().argmax()))
    assert blocks in cuts and len(cuts) > 1, "sometimes no mixing, sometimes a cutoff"
    noise = G.make_noise(n, "cpu", torch.Generator().manual_seed(1))
    wd = torch.randn(n, G.w_dim)
    with torch.no_grad():
        plain = G.synthesize_defect(w, wd, noise)
        repeated = G.synthesize_defect(mix_styles(w, w2, blocks, 0.0), mix_styles(wd, wd, G.n_residual, 0.0), noise)
        other = G.synthesize_defect(mixed, wd, noise)
    for a, b in zip(plain, repeated):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(plain[2], other[2])


def test_checkpoint_config_without_wiring_key_keeps_the_former_wiring(tiny):
    """Generators trained before the option existed have no `residual_input` in their config: they are rebuilt
    with the wiring they were trained with; a config loaded for a new run gets the paper's."""
    assert tiny["residual_input"] == "injected"
    old = {k: v for k, v in tiny.items() if k != "residual_input"}
    assert Generator(old, 1).residual_input == "residual"


def test_all_negative_mask_gives_the_good_image(tiny):
    G = _gen(tiny, 1, seed=4)
    with torch.no_grad():
        G.to_mask.bias.fill_(-1e4)  # M < 0 everywhere: the hard gate closes
    n = 3
    noise = G.make_noise(n, "cpu", torch.Generator().manual_seed(0))
    with torch.no_grad():
        defect, mask, good = G.synthesize_defect(G.mapping(torch.randn(n, G.z_dim)),
                                                 G.defect_mapping(torch.randn(n, G.z_dim)), noise)
    assert not (mask >= 0).any()
    torch.testing.assert_close(defect, good, atol=1e-5, rtol=0)


def test_describe_256_meets_paper_counts(capsys):
    assert main(["gan", "describe", "--config", "configs/dfmgan-256.yaml", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    paper = {"G_backbone": 23.2e6, "stage2_trainable": 3.7e6, "D": 24e6, "D_match": 1.5e6}
    for key, target in paper.items():
        assert abs(counts[key] - target) / target < 0.15, (key, counts[key])


def test_describe_keys_tiny(capsys):
    assert main(["gan", "describe", "--config", "dfmgan-tiny", "--channels", "1", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert {"G_backbone", "stage2_trainable", "D", "D_match"} <= set(counts)
    assert all(counts[k] > 0 for k in ("G_backbone", "stage2_trainable", "D", "D_match"))
    assert counts["channels"] == 1
