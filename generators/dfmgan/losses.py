"""GAN losses: non-saturating logistic, lazy R1, and DFMGAN's mode-seeking term."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits.float()).mean()  # losses in fp32 whatever precision the forward ran in


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def r1_penalty(d_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient norm of D's logit w.r.t. the (un-augmented) real input."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(d_fn(real).float().sum(), real, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


def mode_seeking(w1: torch.Tensor, w2: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor,
                 eps: float = 1e-5) -> torch.Tensor:
    """Distance of two defect codes over the distance of their (tanh-squashed) masks: small when
    different codes give different masks, which keeps masks from collapsing to one shape."""
    dw = (w1 - w2).float().abs().flatten(1).mean(dim=1)  # one code, or one per block when styles are mixed
    dm = (m1 - m2).float().abs().mean(dim=(1, 2, 3))
    return (dw / (dm + eps)).mean()
