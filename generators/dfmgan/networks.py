"""DFMGAN networks in one file: a StyleGAN2 generator with optional defect modules, and the discriminators.

Why one file: the whole model should be readable top to bottom. Layers use the
equalised learning rate of StyleGAN2 (weights stored at unit variance, scaled at
run time). Modulation is applied to the activations and demodulation to the
output (the "non-fused" form), which is the same maths as a grouped per-sample
convolution but runs as one ordinary convolution for the whole batch. Upsampling
layers are StyleGAN2's: a stride-2 transposed convolution on the low-resolution
input, then a [1, 3, 3, 1] blur, a quarter of the work of upsampling first and
convolving at the high resolution.

Speed (no autograd, i.e. sampling): each layer's epilogue (demodulation, noise,
bias, leaky ReLU) is fused into three in-place passes over the fresh conv output,
and an upsampling layer's epilogue also applies the next layer's input styles, so
no large tensor is allocated for either; the result equals the autograd path up
to float rounding. Everything works on channels_last inputs, which the sampler uses.

Images are square or H x W (config `resolution`): levels are named by the short side S (channel widths and
`res_start` follow it), and the maps at level r are (rH/S) x (rW/S), from a (4H/S) x (4W/S) constant.

Stage 2 (DFMGAN): a defect mapping network maps z_defect to w_defect; residual
blocks beside the synthesis blocks from `res_start` up produce defect features;
a ToMask layer on the first residual block gives the mask logits M; residual
features are added to the object features only where M >= 0 (hard gate). With
the residual path off the same z_object gives the paired defect-free image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from generators.dfmgan.config import LEGACY_RESIDUAL_INPUT, parse_hw, resolution_hw

SQRT2 = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with the StyleGAN gain that keeps activations at unit variance."""
    return F.leaky_relu(x, 0.2) * SQRT2


def channels_at(res: int, base: int, cmax: int) -> int:
    return int(min(base // res, cmax))


class EqualLinear(nn.Module):
    def __init__(self, in_f: int, out_f: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_f, in_f) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_f,), float(bias_init)))
        self.w_gain = lr_mul / math.sqrt(in_f)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.w_gain, self.bias * self.lr_mul)
        return lrelu(x) if self.activate else x


class EqualConv2d(nn.Module):
    """Plain conv with equalised lr; `down` halves the resolution as StyleGAN2 does: a [1,3,3,1] blur,
    then the conv with stride 2 (a quarter of the work of convolving at full resolution, then pooling)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, activate: bool = True,
                 down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.w_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.activate, self.down, self.pad = activate, down, kernel // 2
        if down:
            k = torch.tensor([1.0, 3.0, 3.0, 1.0])
            self.register_buffer("blur_kernel", k[:, None] * k[None, :] / k.sum() ** 2, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:  # blur padded so that the stride-2 conv gives exactly half the size: r -> r+1 -> r/2
            pad = (4 - 2 + self.weight.shape[-1] - 1 + 1) // 2
            x = blur(x, self.blur_kernel, padding=pad)
            x = F.conv2d(x, self.weight * self.w_gain, self.bias, stride=2)
        else:
            x = F.conv2d(x, self.weight * self.w_gain, self.bias, padding=self.pad)
        return lrelu(x) if self.activate else x


class ModulatedConv2d(nn.Module):
    """Style-modulated conv: scale input channels by the style, convolve, then (optionally) demodulate.

    `up`: transposed conv with stride 2 + blur (output twice the input size). A 1x1 conv folds the
    style into a per-sample (out, in) matrix instead: one batched matmul, no modulated copy of x.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True, up: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.w_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate, self.up, self.pad = demodulate, up, kernel // 2
        if up:
            k = torch.tensor([1.0, 3.0, 3.0, 1.0])
            self.register_buffer("blur_kernel", (k[:, None] * k[None, :] / k.sum() ** 2 * 4), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        x = self.convolve(x, styles, premodulated=False)
        if self.demodulate:
            x = x * self.demod_scale(styles)[:, :, None, None]
        return x

    def convolve(self, x: torch.Tensor, styles: torch.Tensor, premodulated: bool) -> torch.Tensor:
        """The convolution of the style-scaled input, before demodulation. `premodulated`: the caller
        already scaled x by `styles` (the sampler folds that into the previous layer's epilogue)."""
        weight = self.weight * self.w_gain
        if weight.shape[-1] == 1 and not self.up:
            return pointwise(x, weight[:, :, 0, 0][None] * styles[:, None, :])
        if not premodulated:
            x = x * styles[:, :, None, None]
        if self.up:
            return blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2), self.blur_kernel)
        return F.conv2d(x, weight, padding=self.pad)

    def demod_scale(self, styles: torch.Tensor) -> torch.Tensor:
        """1/|w'| per sample and output channel, |w'|^2 summed over (in, k, k), without building w'. (N, out)"""
        weight = self.weight * self.w_gain
        return torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)


def blur(x: torch.Tensor, kernel: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Depthwise 4x4 low-pass. Upsampling: gain 4 (the zeros a stride-2 transposed conv inserts), pad 1,
    (2r+1) -> 2r. Downsampling: gain 1, pad 2, r -> r+1 before a stride-2 conv."""
    c = x.shape[1]
    return F.conv2d(x, kernel.to(x.dtype).expand(c, 1, 4, 4), padding=padding, groups=c)


def pointwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample 1x1 conv: weight (N, out, in) applied to x (N, in, H, W) as one batched matmul."""
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = torch.bmm(x.permute(0, 2, 3, 1).reshape(n, h * w, c), weight.transpose(1, 2))
        return y.view(n, h, w, -1).permute(0, 3, 1, 2)
    return torch.bmm(weight, x.reshape(n, c, h * w)).view(n, -1, h, w)


class StyleLayer(nn.Module):
    """Modulated 3x3 conv + per-pixel noise (learned strength) + bias + activation."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w)
        x = x + noise * self.noise_strength
        return lrelu(x + self.bias[None, :, None, None])

    @torch.no_grad()
    def sample(self, x: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor, premodulated: bool = False,
               next_styles: torch.Tensor | None = None) -> torch.Tensor:
        """The same layer for sampling (no autograd), with the epilogue fused and in place.

        lrelu(y*d + noise*s + b)*sqrt2 equals lrelu(y*d' + noise*s' + b') with every factor times sqrt2,
        since leaky ReLU is positively homogeneous: three passes over y (addcmul, noise add, leaky ReLU)
        instead of five, and no new large tensors. `next_styles`: also scale the output by the next
        layer's styles (that layer then runs with `premodulated=True`), which saves it a modulated copy.
        Equal to `forward` up to float rounding (tests/test_dfmgan_sampling_speed.py).
        """
        y = self.conv.convolve(x, styles, premodulated)
        scale = self.conv.demod_scale(styles) * SQRT2
        torch.addcmul((self.bias * SQRT2)[None, :, None, None], y, scale[:, :, None, None], out=y)
        y.add_(noise * (self.noise_strength * SQRT2))
        F.leaky_relu_(y, 0.2)
        return y.mul_(next_styles[:, :, None, None]) if next_styles is not None else y


class ToImage(nn.Module):
    """1x1 modulated conv without demodulation (ToRGB, and ToMask with one output channel)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class MappingNetwork(nn.Module):
    """z -> w: normalise z, then an MLP with a reduced learning rate; tracks the mean w for truncation."""

    def __init__(self, z_dim: int, w_dim: int, layers: int, lr_mul: float = 0.01):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_mul=lr_mul, activate=True) for a, b in zip(dims, dims[1:])])
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.z_dim = z_dim

    def forward(self, z: torch.Tensor, truncation: float = 1.0, track_beta: float | None = None) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        w = self.net(z)
        if track_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, track_beta))  # fp32 under autocast too
        if truncation != 1.0:
            w = self.w_avg.lerp(w, truncation)
        return w


class SynthesisBlock(nn.Module):
    """One resolution of the backbone: (upsample +) two style layers, then a skip ToRGB. The first block starts
    from a learned constant of `const_size` (4x4 for a square image, the image's aspect otherwise)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, img_channels: int, first: bool,
                 const_size: tuple[int, int] = (4, 4)):
        super().__init__()
        self.first = first
        if first:
            self.const = nn.Parameter(torch.randn(out_ch, *const_size))
            self.conv0 = None
        else:
            self.conv0 = StyleLayer(in_ch, out_ch, w_dim, up=True)
        self.conv1 = StyleLayer(out_ch, out_ch, w_dim)
        self.to_rgb = ToImage(out_ch, img_channels, w_dim)

    @property
    def n_noise(self) -> int:
        return 1 if self.first else 2

    def features(self, x: torch.Tensor | None, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        if self.first:
            x = self.const[None].expand(w.shape[0], -1, -1, -1)
            return self.conv1(x, w, noise[0]) if torch.is_grad_enabled() else self.conv1.sample(
                x, self.conv1.conv.affine(w), noise[0])
        return two_layers(self.conv0, self.conv1, x, w, noise)

    def rgb(self, x: torch.Tensor, img: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        y = self.to_rgb(x, w)
        if img is None:
            return y
        return F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + y


class ResidualBlock(nn.Module):
    """Defect-aware residual block: same shape as the synthesis block beside it, modulated by w_defect."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int):
        super().__init__()
        self.conv0 = StyleLayer(in_ch, out_ch, w_dim, up=True)
        self.conv1 = StyleLayer(out_ch, out_ch, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        return two_layers(self.conv0, self.conv1, x, w, noise)


def two_layers(conv0: StyleLayer, conv1: StyleLayer, x: torch.Tensor, w: torch.Tensor,
               noise: list[torch.Tensor]) -> torch.Tensor:
    """conv0 (upsampling) then conv1; without autograd conv0's epilogue applies conv1's input styles."""
    if torch.is_grad_enabled():
        return conv1(conv0(x, w, noise[1]), w, noise[0])
    styles1 = conv1.conv.affine(w)
    x = conv0.sample(x, conv0.conv.affine(w), noise[1], next_styles=styles1)
    return conv1.sample(x, styles1, noise[0], premodulated=True)


class Generator(nn.Module):
    """StyleGAN2 backbone; `add_defect_modules()` attaches the DFMGAN stage-2 modules."""

    def __init__(self, config: dict, img_channels: int):
        super().__init__()
        self.config = dict(config)
        self.size = resolution_hw(config)  # (H, W) of the images
        self.resolution = min(self.size)  # the short side: the level that channel widths and res_start refer to
        self.img_channels = int(img_channels)
        self.z_dim, self.w_dim = int(config["z_dim"]), int(config["w_dim"])
        self.res_start = int(config["res_start"])
        base, cmax = int(config["channel_base"]), int(config["channel_max"])
        self.ch = lambda r: channels_at(r, base, cmax)  # noqa: E731
        self.resolutions = [2 ** i for i in range(2, int(math.log2(self.resolution)) + 1)]
        self.mapping = MappingNetwork(self.z_dim, self.w_dim, int(config["mapping_layers"]),
                                      float(config.get("mapping_lr_mul", 0.01)))
        self.blocks = nn.ModuleList(
            SynthesisBlock(self.ch(max(r // 2, 4)), self.ch(r), self.w_dim, self.img_channels, first=(r == 4),
                           const_size=self.level_size(4))
            for r in self.resolutions
        )
        # residual blocks above the first read the defect-injected features (paper) or the last residual output
        self.residual_input = str(config.get("residual_input", LEGACY_RESIDUAL_INPUT))
        self.defect_mapping = None
        self.res_blocks = None
        self.to_mask = None
        self.mask_refiners = None
        self.channels_last = False  # activation layout; the sampler turns it on

    # ----- stage 2 -------------------------------------------------------------------------------
    def add_defect_modules(self) -> None:
        cfg = self.config
        self.defect_mapping = MappingNetwork(self.z_dim, self.w_dim, int(cfg["mapping_layers"]),
                                             float(cfg.get("mapping_lr_mul", 0.01)))
        self.res_blocks = nn.ModuleDict(
            {str(r): ResidualBlock(self.ch(r // 2), self.ch(r), self.w_dim) for r in self.resolutions
             if r >= self.res_start}
        )
        self.to_mask = ToImage(self.ch(self.res_start), 1, self.w_dim)
        if cfg.get("mask_refine", False):  # a mask as thin as the image allows: refined at every residual level
            self.mask_refiners = nn.ModuleDict(
                {str(r): zero_init(ToImage(self.ch(r), 1, self.w_dim)) for r in self.resolutions if r > self.res_start})

    @property
    def has_defect(self) -> bool:
        return self.res_blocks is not None

    def stage2_modules(self) -> list[nn.Module]:
        return [m for m in (self.defect_mapping, self.res_blocks, self.to_mask, self.mask_refiners) if m is not None]

    def backbone_modules(self) -> list[nn.Module]:
        return [self.mapping, self.blocks]

    def level_size(self, r: int) -> tuple[int, int]:
        """(h, w) of the feature maps at level r: r x r for a square image, (rH/S) x (rW/S) for H x W (short side S)."""
        return r * self.size[0] // self.resolution, r * self.size[1] // self.resolution

    # ----- noise ---------------------------------------------------------------------------------
    def make_noise(self, n: int, device, rng: torch.Generator | None = None) -> dict[int, list[torch.Tensor]]:
        """Per-layer noise maps for n samples, keyed by resolution (backbone and residual layers alike)."""
        def draw(res):
            where = rng.device if rng is not None else device
            return torch.randn(n, 1, *self.level_size(res), device=where, generator=rng).to(device)
        noise = {r: [draw(r) for _ in range(b.n_noise)] for r, b in zip(self.resolutions, self.blocks)}
        if self.has_defect:
            for r in self.res_blocks:
                noise[-int(r)] = [draw(int(r)), draw(int(r))]
        return noise

    # ----- forward passes ------------------------------------------------------------------------
    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """channels_last when asked (the sampler sets `self.channels_last`): faster convs on CPU and GPU."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def synthesize(self, w: torch.Tensor, noise: dict) -> torch.Tensor:
        """Backbone only: w (N, w_dim), or one style per block (N, blocks, w_dim) when styles are mixed
        -> image (N, C, H, W), roughly in [-1, 1]."""
        x = img = None
        for i, (r, block) in enumerate(zip(self.resolutions, self.blocks)):
            wi = style_at(w, i)
            x = block.features(x, wi, noise[r])
            if r == 4:
                x = self._layout(x)
            img = block.rgb(x, img, wi)
        return img

    def synthesize_defect(self, w: torch.Tensor, w_defect: torch.Tensor, noise: dict, with_good: bool = True):
        """Defect image, mask logits M at full resolution, and (optionally) the paired good image.

        `w` is one style or one per backbone block (see synthesize); `w_defect` one style or one per residual
        block (N, residual blocks, w_dim); ToMask uses the first residual block's. With `mask_refine`, each
        residual level above the first adds its own mask logits to the upsampled ones from below (the mask's
        skip architecture, as ToRGB's): the gate at that level and the final mask can then be one pixel thin.
        Layers below `res_start` run once; from there the good and defect branches run as one batch
        of 2N through the backbone blocks (the good half is exactly the backbone pass).
        """
        n = w.shape[0]
        x = img = mask = res_x = None
        for i, (r, block) in enumerate(zip(self.resolutions, self.blocks)):
            wi = style_at(w, i)
            if r < self.res_start:
                x = block.features(x, wi, noise[r])
                if r == 4:
                    x = self._layout(x)
                img = block.rgb(x, img, wi)
                continue
            wd = style_at(w_defect, self.resolutions.index(r) - self.resolutions.index(self.res_start))
            if r == self.res_start:
                res_in = x
            elif self.residual_input == "injected":  # the defect branch's features, defect already added
                res_in = x[n:] if with_good else x
            else:
                res_in = res_x
            res_x = self.res_blocks[str(r)](res_in, wd, noise[-r])
            if r > self.res_start and self.mask_refiners is not None:
                mask = upsample_to(mask, self.level_size(r)) + self.mask_refiners[str(r)](res_x, wd)
            if r == self.res_start:
                mask = self.to_mask(res_x, wd)
                if with_good:
                    x = torch.cat([x, x])
                    img = None if img is None else torch.cat([img, img])
            ww = torch.cat([wi, wi]) if with_good else wi
            layer_noise = [torch.cat([t, t]) for t in noise[r]] if with_good else noise[r]
            x = block.features(x, ww, layer_noise)
            gate = (upsample_to(mask, self.level_size(r)) >= 0).to(x.dtype)
            if torch.is_grad_enabled():
                added = res_x * gate
                x = torch.cat([x[:n], x[n:] + added]) if with_good else x + added
            else:  # gate is 0/1, so x + res_x * gate is exact either way; in place saves a full copy
                (x[n:] if with_good else x).addcmul_(res_x, gate)
            img = block.rgb(x, img, ww)
        mask_full = upsample_to(mask, self.size)
        if with_good:
            return img[n:], mask_full, img[:n]
        return img, mask_full, None

    @property
    def n_residual(self) -> int:
        return 0 if self.res_blocks is None else len(self.res_blocks)


def style_at(w: torch.Tensor, i: int) -> torch.Tensor:
    """Block i's style: w itself (N, w_dim), or its i-th row when there is one per block (N, blocks, w_dim)."""
    return w if w.dim() == 2 else w[:, i]


def mix_styles(w: torch.Tensor, w_other: torch.Tensor, n_blocks: int, prob: float) -> torch.Tensor:
    """Style mixing regularisation (StyleGAN2): with probability `prob`, the whole batch switches from w to
    w_other at one random block boundary; returns one style per block (N, n_blocks, w_dim). Draws from the
    global torch RNG. Mixed at block granularity (a block's two convolutions and its ToRGB share a style)."""
    ws = w[:, None].expand(-1, n_blocks, -1)
    if n_blocks < 2 or prob <= 0 or float(torch.rand(())) >= prob:
        return ws.contiguous()
    cutoff = int(torch.randint(1, n_blocks, ()))
    return torch.cat([ws[:, :cutoff], w_other[:, None].expand(-1, n_blocks - cutoff, -1)], dim=1)


def zero_init(layer: ToImage) -> ToImage:
    """A refining ToMask starts at zero, so a new generator's mask is the coarse one until training refines it."""
    with torch.no_grad():
        layer.conv.weight.zero_()
    return layer


def upsample_to(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask logits at the feature map size (h, w) of a level or of the image; bilinear, so the gate's edge is smooth."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=tuple(size), mode="bilinear", align_corners=False)


class MinibatchStd(nn.Module):
    """Append the mean standard deviation across a group of samples as one extra feature map."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group, n)
        while n % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N/g,)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second halves the resolution) plus a 1x1 skip, scaled by 1/sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        return (self.conv1(self.conv0(x)) + skip) / SQRT2


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator with minibatch standard deviation; one logit per image.

    `resolution`: the image side, or (H, W). The blocks halve both sides down to the 4-level of the short side, so
    the fc layer reads that final map: 4x4 for a square image, (4H/S) x (4W/S) for H x W with short side S."""

    def __init__(self, resolution: int | tuple[int, int], in_channels: int, channel_base: int, channel_max: int,
                 mbstd_group: int = 4):
        super().__init__()
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731
        self.size, self.in_channels = parse_hw(resolution, "discriminator"), int(in_channels)
        self.resolution = min(self.size)  # the short side: the level the channel widths refer to
        self.from_rgb = EqualConv2d(in_channels, ch(self.resolution), 1)
        resolutions = [2 ** i for i in range(int(math.log2(self.resolution)), 2, -1)]
        self.blocks = nn.Sequential(*[DiscriminatorBlock(ch(r), ch(r // 2)) for r in resolutions])
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(ch(4) + 1, ch(4), 3)
        final_h, final_w = (4 * side // self.resolution for side in self.size)
        self.fc = EqualLinear(ch(4) * final_h * final_w, ch(4), activate=True)
        self.out = EqualLinear(ch(4), 1)
        self.channels_last = False  # input layout; the trainer turns it on for CUDA

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.blocks(self.from_rgb(x))
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1))).squeeze(1)


def build_discriminator(config: dict, img_channels: int) -> Discriminator:
    return Discriminator(resolution_hw(config), img_channels, int(config["d_channel_base"]),
                         int(config["d_channel_max"]), int(config.get("mbstd_group", 4)))


def build_dmatch(config: dict, img_channels: int) -> Discriminator:
    """D_match: a narrower discriminator on image + mask (one extra input channel)."""
    return Discriminator(resolution_hw(config), img_channels + 1, int(config["dmatch_channel_base"]),
                         int(config["dmatch_channel_max"]), int(config.get("mbstd_group", 4)))


def count_params(modules) -> int:
    if isinstance(modules, nn.Module):
        modules = [modules]
    return sum(p.numel() for m in modules for p in m.parameters())
