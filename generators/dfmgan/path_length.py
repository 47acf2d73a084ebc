"""StyleGAN2's path-length regulariser for G, as the DFMGAN reference trains both stages (weight 2, every 4th G
step, on half a batch): a fixed-size step in w should move the image by a fixed amount, which the reference keeps
on by default for a smoother, better-conditioned mapping from styles to images.

The stage config sets `pl_weight` (0 or absent: off, no extra draws from the RNG, so a run is exactly what it was
before the option) and `pl_interval`. The running mean of the path lengths is training state: it is saved in
checkpoints beside the optimisers and, under torchrun, averaged over ranks so every rank holds the same one.
"""

from __future__ import annotations

import math

import torch

from inspect_train.errors import InputError

PL_DECAY = 0.01  # how fast the target length follows the batch's (the reference's pl_decay)


def pl_settings(stage: dict, where: str = "stage") -> tuple[float, int]:
    """(weight, interval) of a stage config, checked; configs made before the keys: off."""
    try:
        weight, every = float(stage.get("pl_weight", 0.0)), stage.get("pl_interval", 4)
        if isinstance(every, bool) or int(every) != float(every):
            raise ValueError
        every = int(every)
    except (TypeError, ValueError):
        raise InputError(f"{where}: pl_weight must be a number and pl_interval a whole number") from None
    if weight < 0 or every < 1:
        raise InputError(f"{where}: pl_weight must be at least 0 and pl_interval at least 1 (got {weight:g}, {every})")
    return weight, every


class PathLength:
    def __init__(self, stage: dict, device: torch.device, ctx=None, where: str = "stage"):
        self.weight, self.every = pl_settings(stage, where)
        self.device, self.ctx = device, ctx
        self.mean = torch.zeros((), device=device)

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    @property
    def lazy_interval(self) -> int | None:
        """G's Adam gets the lazy-regularisation correction only when G has a lazy regulariser."""
        return self.every if self.enabled else None

    @property
    def scale(self) -> float:
        """Weight times interval: the penalty is applied every `every` steps at `every` times its weight."""
        return self.weight * self.every

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def penalty(self, images: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        """Mean squared deviation of the path lengths |J_w^T y| (y: unit-variance image noise over sqrt(H W))
        from their running mean. `ws`: one style per block (N, blocks, w_dim), part of the graph that made
        `images`; a block's length is summed over w_dim and averaged over blocks, as the reference does per layer."""
        noise = torch.randn(images.shape, device=images.device) / math.sqrt(images.shape[2] * images.shape[3])
        (grad,) = torch.autograd.grad((images.float() * noise).sum(), ws, create_graph=True)
        lengths = grad.float().square().sum(dim=2).mean(dim=1).sqrt()
        batch_mean = lengths.mean().detach()
        if self.ctx is not None and self.ctx.enabled:
            batch_mean = self.ctx.mean(batch_mean)
        self.mean = self.mean.lerp(batch_mean, PL_DECAY)
        return (lengths - self.mean).square().mean()

    def state_dict(self) -> dict:
        return {"mean": self.mean.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.mean = torch.as_tensor(state["mean"], dtype=torch.float32).to(self.device)
