"""The diffusion painter's network and schedules, all from diffusers.

The network is a `UNet2DModel` whose input is the noisy image, the image with the region to paint blanked (mask +
blending band) and the defect mask (2 * C + 1 channels), with two classes as conditioning: 1 paints this defect
type, 0 paints the part's own defect-free surface (learned from train/good, which is far larger than the few base
defects; it teaches the painter the background around and under a defect). No attention layers: a defect is a
local change, and convolution alone keeps a step cheap on a CPU. Training uses the DDPM schedule
(`DDPMScheduler`), sampling a few steps of DDIM (`DDIMScheduler`) or DPM-Solver++ (`DPMSolverMultistepScheduler`)
on the same noise schedule.
"""

from __future__ import annotations

GOOD, DEFECT = 0, 1  # the class labels


def build_unet(config: dict, channels: int):
    """The painter's UNet2DModel for `channels`-channel images at the config's widths."""
    from diffusers import UNet2DModel

    unet = config["unet"]
    widths = tuple(int(c) for c in unet["channels"])
    return UNet2DModel(
        sample_size=int(config["resolution"]), in_channels=2 * int(channels) + 1, out_channels=int(channels),
        block_out_channels=widths, layers_per_block=int(unet.get("layers_per_block", 1)),
        down_block_types=("DownBlock2D",) * len(widths), up_block_types=("UpBlock2D",) * len(widths),
        norm_num_groups=int(unet.get("norm_groups", 8)), add_attention=False, num_class_embeds=2)


def schedule_kwargs(config: dict) -> dict:
    schedule = config["schedule"]
    return {"num_train_timesteps": int(schedule.get("timesteps", 1000)),
            "beta_schedule": str(schedule.get("beta_schedule", "squaredcos_cap_v2")),
            "prediction_type": str(schedule.get("prediction", "epsilon"))}


def training_scheduler(config: dict):
    """The DDPM forward process the painter is trained on (noise added at a random timestep)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**schedule_kwargs(config), clip_sample=False)


def sampling_scheduler(config: dict, name: str | None = None):
    """The few-step sampler over the training noise schedule: `ddim` (deterministic DDIM, eta 0) or `dpm`
    (DPM-Solver++, second order)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    name = name or config["sample"].get("scheduler", "ddim")
    if name == "dpm":
        return DPMSolverMultistepScheduler(**schedule_kwargs(config), algorithm_type="dpmsolver++", solver_order=2)
    return DDIMScheduler(**schedule_kwargs(config), clip_sample=False, set_alpha_to_one=True)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
