"""Parameter counts of a config's networks (trainable parameters, as the paper reports them)."""

from __future__ import annotations

from generators.dfmgan.config import resolution_hw, resolution_value
from generators.dfmgan.networks import Generator, build_discriminator, build_dmatch, count_params


def describe(config: dict, channels: int = 3) -> dict:
    """G_backbone: mapping + synthesis (stage 1 trainable); stage2_trainable: defect mapping + residual
    blocks + ToMask (all that stage 2 trains on the G side); D; D_match."""
    G = Generator(config, channels)
    G.add_defect_modules()
    return {
        "config": config.get("name"),
        "resolution": resolution_value(resolution_hw(config)),
        "channels": int(channels),
        "G_backbone": count_params(G.backbone_modules()),
        "stage2_trainable": count_params(G.stage2_modules()),
        "D": count_params(build_discriminator(config, channels)),
        "D_match": count_params(build_dmatch(config, channels)),
    }
