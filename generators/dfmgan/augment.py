"""Differentiable augmentation (DiffAugment-style) so the discriminators do not memorise a few images.

The same random ops are applied to real and fake batches; gradients flow through
them to G. Geometric ops move every channel together (image and mask stay
aligned for D_match); colour ops touch only the first `color_channels`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inspect_train.errors import InputError

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str | None) -> list[str]:
    ops = [p.strip() for p in (policy or "").split(",") if p.strip()]
    unknown = [p for p in ops if p not in POLICIES]
    if unknown:
        raise InputError(f"augment policy: unknown op(s) {unknown} (known: {', '.join(POLICIES)})")
    return ops


def augment(x: torch.Tensor, policy: str | None, color_channels: int | None = None) -> torch.Tensor:
    for op in parse_policy(policy):
        if op == "color":
            x = _color(x, color_channels or x.shape[1])
        elif op == "translation":
            x = _translation(x)
        elif op == "cutout":
            x = _cutout(x)
    return x


def _rand(n: int, x: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype)


def _color(x: torch.Tensor, cc: int) -> torch.Tensor:
    """Random brightness, saturation (RGB only) and contrast on the image channels."""
    img, rest = x[:, :cc], x[:, cc:]
    n = x.shape[0]
    img = img + (_rand(n, x) - 0.5)
    if cc > 1:
        mean = img.mean(dim=1, keepdim=True)
        img = (img - mean) * (_rand(n, x) * 2) + mean
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    img = (img - mean) * (_rand(n, x) + 0.5) + mean
    return torch.cat([img, rest], dim=1) if rest.shape[1] else img


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by up to ratio*size whole pixels, padding with zeros."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (n,), device=x.device).to(x.dtype)
    tx = torch.randint(-sx, sx + 1, (n,), device=x.device).to(x.dtype)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * tx / w
    theta[:, 1, 2] = -2 * ty / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random rectangle of half the size per sample."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).to(x.dtype)[:, None]


class AdaptiveAugment:
    """Adaptive discriminator augmentation (Karras et al. 2020, StyleGAN2-ADA), on our ops: each op of the policy
    is applied to each sample with probability p. p starts at 0 and follows an overfitting signal, the mean sign
    of D's logits on (augmented) real images: above `target` (D is too sure of the reals) p rises, below it p
    falls, by at most batch * interval / (kimg * 1000) per adjustment, so p could cross 0 -> 1 after `kimg`
    thousand real images. The signal is accumulated on the device and read once per `interval` steps, and
    averaged over processes under torchrun. Written by hand: the library (NVIDIA's stylegan2-ada-pytorch) is not
    an installable package."""

    def __init__(self, policy: str | None, color_channels: int | None, *, target: float = 0.6, kimg: float = 500.0,
                 interval: int = 4, batch: int = 8, ctx=None):
        self.ops, self.color_channels = parse_policy(policy), color_channels  # parsed once, not every call
        self.target, self.interval = float(target), int(interval)
        self.step_size = batch * self.interval / (float(kimg) * 1000.0)
        self.ctx = ctx
        self.p = 0.0
        self._signs: torch.Tensor | None = None  # running sum of sign(logits) and count, on the device
        self._count = 0
        self._calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0:
            return x
        for op in self.ops:
            changed = augment(x, op, self.color_channels)
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
            x = torch.where(keep, changed, x)
        return x

    def observe(self, real_logits: torch.Tensor) -> None:
        """Record D's logits on this step's real batch; every `interval` calls, move p towards the target."""
        signs = real_logits.detach().sign().sum()
        self._signs = signs if self._signs is None else self._signs + signs
        self._count += real_logits.numel()
        self._calls += 1
        if self._calls % self.interval:
            return
        total = torch.stack([self._signs.float(), torch.tensor(float(self._count), device=self._signs.device)])
        if self.ctx is not None and self.ctx.enabled:
            total = self.ctx.mean(total) * self.ctx.world_size
        overfit = float(total[0] / total[1])  # one host read per interval
        direction = 1.0 if overfit > self.target else -1.0 if overfit < self.target else 0.0
        self.p = min(max(self.p + direction * self.step_size, 0.0), 1.0)
        self._signs, self._count = None, 0

    def state_dict(self) -> dict:
        partial = 0.0 if self._signs is None else float(self._signs)  # a resumed run continues the interval
        return {"p": self.p, "calls": self._calls, "signs": partial, "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self.p, self._calls, self._count = float(state["p"]), int(state["calls"]), int(state["count"])
        self._signs = torch.tensor(float(state["signs"])) if self._count else None


def discriminator_augment(stage: dict, color_channels: int, batch: int, ctx=None):
    """The augmentation in front of D: adaptive (ADA) when the stage config has `ada_target`, else the fixed
    DiffAugment policy. Returns (augment_fn, the AdaptiveAugment or None)."""
    policy = stage.get("augment")
    if stage.get("ada_target") is None:
        return (lambda x: augment(x, policy, color_channels)), None
    ada = AdaptiveAugment(policy, color_channels, target=float(stage["ada_target"]),
                          kimg=float(stage.get("ada_kimg", 500)), interval=int(stage.get("ada_interval", 4)),
                          batch=batch, ctx=ctx)
    return ada, ada
