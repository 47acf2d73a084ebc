"""DFMGANGenerator: the in-loop sampler (implements generators.base.DefectGenerator).

One stage-2 checkpoint per defect type. A call draws z_object, z_defect and the
noise maps from the given torch.Generator, runs the shared low-resolution layers
once and the good/defect branches as one batch, and returns everything on the
generator's device. Consumers that never use the paired good image (classify,
U-Net/DeepLabV3 segment) build it with `paired_good=False`: same draws, same
defect images and masks, about 30% less work at 256.

Speed: no autograd (the network's epilogues then run in place), channels_last
activations, and optionally `torch.compile` (`compile=True`; pays only for long
runs, the first call of each batch size compiles). fp32 results equal the plain
two-pass path up to float rounding (tests/test_dfmgan_sampling_speed.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from generators.base import SyntheticBatch
from generators.dfmgan.checkpoint import load_checkpoint
from generators.dfmgan.config import resolution_hw, resolution_value
from generators.dfmgan.networks import Generator
from inspect_train.errors import InputError


AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class DFMGANGenerator:
    def __init__(self, checkpoints: dict[str, Path], device="cpu", truncation: float = 1.0,
                 channels_last: bool = True, compile: bool = False, precision: str = "fp32",
                 paired_good: bool = True):
        if not checkpoints:
            raise InputError("DFMGAN: no stage-2 checkpoint given")
        self.device = torch.device(device)
        self.truncation = float(truncation)
        if precision not in AMP:
            raise InputError(f"DFMGAN: precision '{precision}' (choose {', '.join(AMP)})")
        self.precision = precision
        self.paired_good = bool(paired_good)  # False: skip the good branch (30 of 74 GFLOP per 256 triplet)
        self.defect_types = list(checkpoints)
        self._nets: dict[str, Generator] = {}
        self.info: dict[str, dict] = {}
        shapes = set()
        for defect_type, path in checkpoints.items():
            state = load_checkpoint(path, kind="defect")
            G = Generator(state["config"], state["channels"])
            G.add_defect_modules()
            G.load_state_dict(state["G_ema"])
            G.channels_last = bool(channels_last)
            self._nets[defect_type] = G.to(self.device).eval().requires_grad_(False)
            self.info[defect_type] = {k: state.get(k) for k in ("defect_type", "step", "backbone_checkpoint",
                                                                 "manifest", "partition", "category")}
            shapes.add((resolution_hw(state, str(path)), int(state["channels"])))
        if len(shapes) > 1:
            raise InputError(f"DFMGAN: checkpoints disagree on resolution/channels {sorted(shapes)}")
        self.size, self.channels = shapes.pop()  # (H, W) of every sample
        self.resolution = resolution_value(self.size)  # as the checkpoints record it: N (square) or 'HxW'
        self._synth = {k: (torch.compile(G.synthesize_defect) if compile else G.synthesize_defect)
                       for k, G in self._nets.items()}

    @classmethod
    def from_paths(cls, paths: list[Path], device="cpu", truncation: float = 1.0, **options) -> "DFMGANGenerator":
        """Build from checkpoint files alone; the defect type is read from each checkpoint."""
        mapping = {}
        for path in paths:
            defect_type = load_checkpoint(path, kind="defect")["defect_type"]
            if defect_type in mapping:
                raise InputError(f"{path}: a second checkpoint for defect type '{defect_type}'")
            mapping[defect_type] = Path(path)
        return cls(mapping, device=device, truncation=truncation, **options)

    @torch.no_grad()
    def sample(self, n: int, defect_type: str, rng: torch.Generator) -> SyntheticBatch:
        if defect_type not in self._nets:
            raise InputError(f"DFMGAN: no checkpoint for defect type '{defect_type}' (have {self.defect_types})")
        G = self._nets[defect_type]
        where = rng.device
        z = torch.randn(n, G.z_dim, generator=rng, device=where).to(self.device)
        z_def = torch.randn(n, G.z_dim, generator=rng, device=where).to(self.device)
        noise = G.make_noise(n, self.device, rng)
        w = G.mapping(z)  # the part itself is never truncated: truncation is a choice about defects (reference)
        w_def = G.defect_mapping(z_def, truncation=self.truncation)
        amp = AMP[self.precision]
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            defect, mask_logits, good = self._synth[defect_type](w, w_def, noise, with_good=self.paired_good)
        to01 = lambda x: ((x.float().clamp(-1, 1) + 1) / 2).contiguous()  # noqa: E731
        labels = torch.full((n,), self.defect_types.index(defect_type), dtype=torch.long, device=self.device)
        return SyntheticBatch(to01(defect), (mask_logits >= 0).float().contiguous(), labels,
                              to01(good) if good is not None else None)
