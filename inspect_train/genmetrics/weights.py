"""Find pretrained weight files without downloading: an explicit path, else the torch hub cache.

The hub cache (`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`)
is where torch-fidelity, torchmetrics and torchvision put these files when they
can download, so a machine that ever ran them already has what we need.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch

from inspect_train.errors import InputError

# The files torch-fidelity's Inception and torchvision's LPIPS backbones download (tests check these against
# the libraries), named here so that looking for them does not import those libraries (seconds).
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
LPIPS_BACKBONE_URLS = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def file_name_of(url: str) -> str:
    return Path(urlparse(url).path).name


def find_weights(explicit: str | Path | None, url: str, what: str, option: str) -> Path:
    """The weights file to load, or one InputError line naming what is missing and where we looked."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise InputError(f"{path}: {what} weights file not found ({option})")
        return path
    candidate = hub_checkpoint_dir() / file_name_of(url)
    if candidate.is_file():
        return candidate
    raise InputError(
        f"{what} weights not found: looked for {candidate} (torch hub cache; TORCH_HOME moves it); "
        f"put {url} there or pass {option} PATH"
    )
