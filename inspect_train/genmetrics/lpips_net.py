"""LPIPS (Zhang et al. 2018) from the `lpips` package, turned into an embedding.

LPIPS(x, y) = sum over layers l of mean over positions of sum_c w_lc (a_lc - b_lc)^2,
where a, b are channel-normalised backbone activations and w >= 0 the learned
linear weights. So LPIPS is exactly the squared Euclidean distance between the
embeddings e(x) = concat_l a_l * sqrt(w_l / (H_l W_l)): each image goes through
the backbone once and all pairwise distances come from one matrix product.

Weights: the backbone's ImageNet file (torchvision's, in the torch hub cache or
--lpips-backbone-weights) and the linear layers (shipped inside the `lpips`
package, or --lpips-lin-weights). Nothing is downloaded.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import lpips
import torch
from torchvision import models as tv_models

from inspect_train.errors import InputError
from inspect_train.genmetrics.weights import find_weights

BACKBONES = {
    "alex": tv_models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg": tv_models.VGG16_Weights.IMAGENET1K_V1,
    "squeeze": tv_models.SqueezeNet1_1_Weights.IMAGENET1K_V1,
}
VERSION = "0.1"
MIN_SIDE = 32  # AlexNet's pooling leaves nothing of smaller images


def packaged_lin_weights(net: str) -> Path:
    return Path(lpips.__file__).parent / "weights" / f"v{VERSION}" / f"{net}.pth"


def _load_state(path: Path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputError(f"{path}: unreadable {what} weights ({type(err).__name__}: {first[:160]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: {what} weights file holds no state dict")
    return state


def _load_backbone(model: lpips.LPIPS, path: Path, net: str) -> None:
    """torchvision names the layers features.<i>; lpips keeps the same <i> inside net.slice<k>."""
    state = _load_state(path, f"{net} backbone")
    target = model.net.state_dict()
    mapped = {}
    for key in target:
        source_key = "features." + key.split(".", 1)[1]
        if source_key not in state or state[source_key].shape != target[key].shape:
            raise InputError(f"{path}: not torchvision {net} ImageNet weights (missing or mis-shaped {source_key})")
        mapped[key] = state[source_key]
    model.net.load_state_dict(mapped)


def _load_lin(model: lpips.LPIPS, path: Path, net: str) -> None:
    state = _load_state(path, f"LPIPS {net} linear-layer")
    wanted = [k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")]
    missing = [k for k in wanted if k not in state or state[k].shape != model.state_dict()[k].shape]
    if missing:
        raise InputError(f"{path}: not LPIPS v{VERSION} {net} linear weights (missing or mis-shaped {missing[0]})")
    if any(float(state[k].min()) < 0 for k in wanted):
        raise InputError(f"{path}: LPIPS linear weights must be non-negative")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)


class LpipsEmbedder:
    """Callable: uint8 (N, C, H, W) -> float32 (N, D) embeddings whose squared distances are LPIPS."""

    def __init__(self, model: lpips.LPIPS, device: torch.device, net: str, weights: dict, batch: int = 32):
        self.model = model
        self.device = device
        self.net = net
        self.weights = weights
        self.batch = batch
        self.scales = [lin.model[-1].weight.detach().flatten().clamp_min(0).sqrt() for lin in model.lins]

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 grey or RGB -> float RGB in [-1, 1], the range the lpips networks take."""
        x = images.to(self.device).float() / 127.5 - 1.0
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        if min(images.shape[2:]) < MIN_SIDE:
            raise InputError(f"LPIPS needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels (got {tuple(images.shape[2:])})")
        out = []
        for start in range(0, images.shape[0], self.batch):
            x = self.model.scaling_layer(self.to_input(images[start:start + self.batch]))
            parts = []
            for act, scale in zip(self.model.net(x), self.scales):
                act = lpips.normalize_tensor(act)
                weight = scale.view(1, -1, 1, 1) / (act.shape[2] * act.shape[3]) ** 0.5
                parts.append((act * weight).flatten(1))
            out.append(torch.cat(parts, dim=1))
        return torch.cat(out)


def build_lpips(
    net: str = "alex",
    *,
    backbone_weights: str | Path | None = None,
    lin_weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch: int = 32,
) -> LpipsEmbedder:
    """The lpips package's LPIPS network with weights from explicit paths or the caches; `random_init` is for tests only."""
    if net not in BACKBONES:
        raise InputError(f"--lpips-net must be one of {sorted(BACKBONES)} (got '{net}')")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lpips passes torchvision's deprecated `pretrained=`
        torch.manual_seed(seed)
        model = lpips.LPIPS(net=net, version=VERSION, pretrained=False, pnet_rand=True, verbose=False)
    if random_init:
        for lin in model.lins:  # LPIPS weights are non-negative; keep that so distances stay distances
            lin.model[-1].weight.data.abs_()
        sources = {"backbone": "random-init (test only)", "lin": "random-init (test only)"}
    else:
        backbone = find_weights(backbone_weights, BACKBONES[net].url, f"LPIPS {net} backbone", "--lpips-backbone-weights")
        lin = Path(lin_weights).expanduser() if lin_weights else packaged_lin_weights(net)
        if not lin.is_file():
            option = "--lpips-lin-weights" if lin_weights else "shipped with the lpips package; reinstall it or pass --lpips-lin-weights"
            raise InputError(f"{lin}: LPIPS {net} linear-layer weights file not found ({option})")
        _load_backbone(model, backbone, net)
        _load_lin(model, lin, net)
        sources = {"backbone": str(backbone), "lin": str(lin)}
    model.eval().requires_grad_(False).to(device)
    return LpipsEmbedder(model, device, net, sources, batch)
