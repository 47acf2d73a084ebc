"""Inception-v3 pool features (2048-d) for KID, via torch-fidelity's TF-compatible network.

torch-fidelity's network reproduces the TensorFlow Inception used by the KID/FID
papers (and by StyleGAN2-ADA, whose KID code DFMGAN reports), including its
resize to 299x299. It takes uint8 RGB; grey images are repeated to 3 channels.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

from inspect_train.checkpoint import load_weights_only
from inspect_train.errors import InputError
from inspect_train.genmetrics.weights import find_weights

FEATURE = "2048"
NAME = "inception-v3-compat"


class _RandomInception(FeatureExtractorInceptionV3):
    """TEST ONLY: the same network left at random (He) initialisation; its numbers mean nothing."""

    def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: D102 - keep the random init
        return super().load_state_dict(state_dict, strict=False, assign=assign)


def _empty_state_file() -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save({}, buffer)
    buffer.seek(0)
    return buffer


class InceptionFeatures:
    """Callable: uint8 (N, C, H, W), C in {1, 3} -> float32 (N, 2048) on the CPU, batched."""

    def __init__(self, model: nn.Module, device: torch.device, weights: str, batch: int = 32):
        self.model = model
        self.device = device
        self.weights = weights
        self.batch = batch

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        out = []
        for start in range(0, images.shape[0], self.batch):
            chunk = images[start:start + self.batch].to(self.device)
            if chunk.shape[1] == 1:
                chunk = chunk.expand(-1, 3, -1, -1)
            (features,) = self.model(chunk.contiguous())
            out.append(features.float().cpu())
        return torch.cat(out) if out else torch.zeros((0, int(FEATURE)))


def build_inception(
    weights: str | Path | None = None,
    *,
    random_init: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch: int = 32,
) -> InceptionFeatures:
    """Load torch-fidelity's Inception from `weights` or the hub cache; `random_init` is for tests only."""
    device = torch.device(device)
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _RandomInception(NAME, [FEATURE], feature_extractor_weights_path=_empty_state_file())
            for module in model.modules():
                if isinstance(module, nn.Conv2d):  # default init makes features vanish over 90 layers
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        source = "random-init (test only)"
    else:
        path = find_weights(weights, URL_INCEPTION_V3, "Inception-v3 (KID)", "--inception-weights")
        # Read here with the weights-only unpickler (a user's file runs no code), then handed over as a buffer.
        state = io.BytesIO()
        torch.save(load_weights_only(Path(path), "weights file"), state)
        state.seek(0)
        try:
            model = FeatureExtractorInceptionV3(NAME, [FEATURE], feature_extractor_weights_path=state)
        except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, KeyError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise InputError(f"{path}: not torch-fidelity Inception-v3 weights ({type(err).__name__}: {first[:160]})") from None
        source = str(path)
    model.eval().requires_grad_(False).to(device)
    return InceptionFeatures(model, device, source, batch)
