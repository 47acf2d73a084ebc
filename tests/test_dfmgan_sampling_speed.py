"""The fast sampler must make the same numbers as the straightforward two-pass path (fp32), at a tiny config.

Fast path: shared low-resolution layers, good + defect branches as one batch, in-place epilogues
under no-grad, channels_last, 1x1 convs as a batched matmul. Straightforward path: defect + mask in
one pass and a second full backbone pass for the good image, out-of-place ops, NCHW.
"""

import pytest
import torch
import torch.nn.functional as F

from generators.dfmgan.api import DFMGANGenerator, load_config
from generators.dfmgan.checkpoint import save_checkpoint
from generators.dfmgan.networks import Generator, ModulatedConv2d
from inspect_train.errors import InputError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    config = load_config("dfmgan-tiny")
    torch.manual_seed(7)
    G = Generator(config, 3)
    G.add_defect_modules()
    with torch.no_grad():  # random noise strengths so the noise inputs matter in the comparison
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.normal_(0, 0.3)
    state = {"kind": "dfmgan-defect", "config": config, "channels": 3, "resolution": 32, "defect_type": "hole",
             "step": 0, "G_ema": G.state_dict()}
    return save_checkpoint(state, tmp_path_factory.mktemp("speed") / "defect_hole.pt")


def straightforward(gen: DFMGANGenerator, n: int, seed: int):
    """Same draws in the same order as DFMGANGenerator.sample, computed the plain way."""
    G = gen._nets["hole"]
    G.channels_last = False
    rng = torch.Generator().manual_seed(seed)
    try:
        with torch.enable_grad():  # nothing requires grad: plain out-of-place ops, no graph
            z = torch.randn(n, G.z_dim, generator=rng)
            z_def = torch.randn(n, G.z_dim, generator=rng)
            noise = G.make_noise(n, "cpu", rng)
            defect, mask, _ = G.synthesize_defect(G.mapping(z), G.defect_mapping(z_def), noise, with_good=False)
            good = G.synthesize(G.mapping(z), noise)
    finally:
        G.channels_last = True
    return defect, mask, good


def test_fast_sampler_equals_two_pass_reference(ckpt):
    gen = DFMGANGenerator({"hole": ckpt})
    n = 6
    fast = gen.sample(n, "hole", torch.Generator().manual_seed(3))
    defect, mask_logits, good = straightforward(gen, n, 3)
    to01 = lambda x: (x.clamp(-1, 1) + 1) / 2  # noqa: E731
    torch.testing.assert_close(fast.images, to01(defect), atol=1e-5, rtol=0)  # float rounding: channels_last sums in another order
    torch.testing.assert_close(fast.goods, to01(good), atol=1e-5, rtol=0)  # float rounding: channels_last sums in another order
    clear = mask_logits.abs() > 1e-4  # pixels whose sign float rounding cannot flip
    assert torch.equal(fast.masks[clear], (mask_logits >= 0).float()[clear])
    on = (mask_logits >= 0).flatten(1).any(1)
    assert on.any()  # some defect is drawn: the residual path is exercised
    assert ((fast.images - fast.goods).abs().flatten(1).amax(1)[on] > 1e-4).all()
    assert fast.images.is_contiguous() and fast.goods.is_contiguous() and fast.masks.is_contiguous()


def test_fused_epilogues_equal_the_autograd_path(ckpt):
    """No-grad fuses each epilogue (sqrt2 folded into the factors, next styles applied in place):
    the same maths in another float order, so equal up to rounding, at NCHW and channels_last."""
    gen = DFMGANGenerator({"hole": ckpt}, channels_last=False)
    G = gen._nets["hole"]
    n = 4
    w, wd = G.mapping(torch.randn(n, G.z_dim)), G.defect_mapping(torch.randn(n, G.z_dim))
    noise = G.make_noise(n, "cpu", torch.Generator().manual_seed(1))
    with torch.enable_grad():
        plain = G.synthesize_defect(w.detach(), wd.detach(), noise)
    for channels_last in (False, True):
        G.channels_last = channels_last
        with torch.no_grad():
            fast = G.synthesize_defect(w.detach(), wd.detach(), noise)
        for a, b in zip(fast, plain):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
            assert not torch.equal(a, torch.zeros_like(a))


def test_upsampling_conv_matches_per_sample_definition():
    """Up layer = per-sample modulated, demodulated weights; stride-2 transposed conv; [1,3,3,1] blur."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 7, 3, w_dim=6, up=True)
    x, w = torch.randn(3, 5, 8, 8), torch.randn(3, 6)
    out = conv(x, w)
    assert out.shape == (3, 7, 16, 16)
    styles = conv.affine(w)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    blur = (k[:, None] * k[None] / 16).expand(7, 1, 4, 4)
    for i in range(3):
        weight = conv.weight * conv.w_gain * styles[i][None, :, None, None]
        weight = weight / weight.square().sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        y = F.conv_transpose2d(x[i:i + 1], weight.transpose(0, 1), stride=2)
        ref = F.conv2d(y, blur, padding=1, groups=7)
        torch.testing.assert_close(out[i:i + 1], ref, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_sampling_is_close_and_well_formed(ckpt):
    fp32 = DFMGANGenerator({"hole": ckpt}).sample(4, "hole", torch.Generator().manual_seed(5))
    bf16 = DFMGANGenerator({"hole": ckpt}, precision="bf16").sample(4, "hole", torch.Generator().manual_seed(5))
    assert bf16.images.dtype == bf16.masks.dtype == torch.float32
    assert set(bf16.masks.unique().tolist()) <= {0.0, 1.0}
    assert (bf16.goods - fp32.goods).abs().mean() < 0.05
    with pytest.raises(InputError):
        DFMGANGenerator({"hole": ckpt}, precision="fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_sampler_matches_cpu(ckpt, precision):
    """fp32 on CUDA uses TF32 convolutions by default (10-bit mantissa): close to the CPU, not equal."""
    cpu = DFMGANGenerator({"hole": ckpt}).sample(4, "hole", torch.Generator().manual_seed(2))
    gpu = DFMGANGenerator({"hole": ckpt}, device="cuda", precision=precision).sample(
        4, "hole", torch.Generator().manual_seed(2))
    tol = 5e-3 if precision == "fp32" else 0.05
    assert gpu.images.device.type == "cuda"
    assert (gpu.goods.cpu() - cpu.goods).abs().mean() < tol


def test_downsampling_conv_is_blur_then_stride_two():
    """D's downsampling conv: [1,3,3,1]/8 blur (zero pad 2) then a stride-2 3x3 conv; r -> r/2."""
    from generators.dfmgan.networks import EqualConv2d

    torch.manual_seed(0)
    conv = EqualConv2d(4, 6, 3, down=True)
    x = torch.randn(2, 4, 16, 16)
    out = conv(x)
    assert out.shape == (2, 6, 8, 8)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2)), (k[:, None] * k[None]).expand(4, 1, 4, 4), groups=4)
    ref = F.conv2d(blurred, conv.weight * conv.w_gain, conv.bias, stride=2)
    torch.testing.assert_close(out, F.leaky_relu(ref, 0.2) * 2 ** 0.5, atol=1e-5, rtol=1e-4)


def test_without_paired_good_same_defects_and_no_goods(ckpt):
    """paired_good=False (classify, U-Net segment) skips the good branch: same draws, same defects and masks."""
    both = DFMGANGenerator({"hole": ckpt}).sample(5, "hole", torch.Generator().manual_seed(4))
    alone = DFMGANGenerator({"hole": ckpt}, paired_good=False).sample(5, "hole", torch.Generator().manual_seed(4))
    assert alone.goods is None and both.goods is not None
    torch.testing.assert_close(alone.images, both.images, atol=1e-5, rtol=0)
    clear = (alone.masks == both.masks).float().mean()
    assert clear > 0.999 and alone.masks.sum() > 0
