"""The diffusion painter's declaration (`--aug diffusion`): one painter per partition and defect type, trained when
missing on that partition's base images and train/good, cached under `--generators`/diffusion
(p<k>/<defect>/diffusion_<defect>.pt, index.json). Painters are square, at their config's resolution; the online
dataset resizes their samples. diffusers is imported only when a painter is trained or loaded."""

from __future__ import annotations

from pathlib import Path

from generators.diffusion.checkpoint import KEYS, KIND, painter_file
from generators.diffusion.cli import add_commands
from generators.diffusion.config import default_config_for, load_config
from generators.inpaint.masks import MASK_SOURCE_OPTION, check_mask_source
from generators.registry import register_generator
from generators.spec import TASK_COMMANDS, BuildRequest, GeneratorSpec, Learned, Option, Plan, TrainJob
from inspect_train.errors import InputError
from inspect_train.validators import positive_int, whole_number


def plan(data, options: dict, device: str) -> Plan:
    """`config` None: diffusion-tiny for a task at 32 px or less, diffusion-64 up to 64 px, else diffusion-128
    (with `weights`: diffusion-sd, at the task's size); `train_steps` None: the config's. A cached painter is reused
    only with the same training steps (and weights folder)."""
    if options.get("weights"):
        from generators.diffusion.pretrained import load_pretrained_config, resolve_weights

        folder = str(resolve_weights(options["weights"]))
        config = load_pretrained_config(options.get("config") or "diffusion-sd")
        side = int(max(data.size))
        steps = options.get("train_steps")
        steps = int(steps) if steps is not None else int(config["train"]["steps"])
        wanted = {"steps": steps, "weights": folder}
        return Plan(config, (side, side), side, trained_with=wanted, settings=dict(wanted),
                    note=f"LoRA + token on {folder}")
    config = load_config(options.get("config") or default_config_for(tuple(data.size)))
    side = int(config["resolution"])
    steps = options.get("train_steps")
    steps = int(steps) if steps is not None else int(config["train"]["steps"])
    return Plan(config, (side, side), side, trained_with={"steps": steps}, settings={"steps": steps})


def train(job: TrainJob) -> Path:
    from generators.diffusion.api import fit_diffusion

    cache = job.cache
    subset = cache.data.defects[job.defect].select(job.names)
    if cache.plan.settings.get("weights"):
        from generators.diffusion.pretrained import train_pretrained

        return train_pretrained(subset.images, subset.masks, cache.data.train_good.images, job.defect, job.out,
                                config=cache.config, weights=cache.plan.settings["weights"],
                                resolution=cache.plan.size[0], steps=cache.plan.settings["steps"], seed=cache.seed,
                                device=cache.device, resume=job.resume, progress=cache.progress, extra=job.extra,
                                **cache.dist())
    return fit_diffusion(subset.images, subset.masks, cache.data.train_good.images, job.defect, job.out,
                         config=cache.config, steps=cache.plan.settings["steps"], seed=cache.seed, device=cache.device,
                         resume=job.resume, progress=cache.progress, extra=job.extra, **cache.dist())


def uses_dfmgan_masks(options: dict) -> bool:
    return options.get("mask_source") == "dfmgan"


def build(request: BuildRequest):
    """The painters paint the train/good images at their own resolution (the category as loaded for them)."""
    from generators.diffusion.api import build_diffusion_generator

    options = dict(request.options)
    mask_checkpoints = options.pop("mask_checkpoints", None)
    if uses_dfmgan_masks(options) and mask_checkpoints is None:
        mask_checkpoints = request.checkpoints("dfmgan")
    data = request.data_for("diffusion")
    return build_diffusion_generator(request.checkpoints("diffusion"), data.train_good, request.base_sets(data),
                                     request.device, mask_source=options.get("mask_source") or "base",
                                     mask_checkpoints=mask_checkpoints, mask_options=options.get("mask_options"),
                                     sample_steps=options.get("sample_steps"))


def load(checkpoints: dict[str, Path], goods, device, options: dict):
    """Painters from their files alone: each paints into its own stored base masks (deformed), on `goods`."""
    from generators.diffusion.sampler import DiffusionGenerator

    return DiffusionGenerator(checkpoints, goods, None, device, sample_steps=options.get("sample_steps"))


def check_options(options: dict) -> None:
    """Checked before any arm trains: a typo must not surface after the baseline's hour."""
    check_mask_source(options.get("mask_source"))
    if options.get("weights"):
        from generators.diffusion.pretrained import resolve_weights

        resolve_weights(options["weights"])
    if options.get("train_steps") is not None and int(options["train_steps"]) < 0:
        raise InputError(f"--diffusion-train-steps {options['train_steps']}: must be 0 or more")
    if options.get("sample_steps") is not None and int(options["sample_steps"]) < 1:
        raise InputError(f"--diffusion-steps {options['sample_steps']}: must be 1 or more")


@register_generator
def diffusion() -> GeneratorSpec:
    return GeneratorSpec(
        "diffusion", "the diffusion defect painter: denoises one defect type into a mask on a real good image",
        build,
        options=(
            Option("config", "--diffusion-config", help="--aug diffusion: painter config, a name in configs/ or a "
                   "path (default: the preset's generators.diffusion.config, else diffusion-tiny up to 32 px, "
                   "diffusion-64 up to 64, diffusion-128 above)"),
            Option("train_steps", "--diffusion-train-steps", whole_number, metavar="N",
                   help="--aug diffusion: training steps of each painter (per defect type and partition) when it is "
                        "trained here (default: the diffusion config's)"),
            Option("sample_steps", "--diffusion-steps", positive_int, metavar="N",
                   commands=(*TASK_COMMANDS, "generate", "evaluate-gen"),
                   help="--aug diffusion: denoising steps of each drawn sample (DDIM or DPM-Solver, as the config "
                        "says; default: the diffusion config's sample.steps); fewer is faster"),
            Option("weights", "--diffusion-weights", metavar="DIR",
                   help="--aug diffusion: train LoRA + a token per defect type on this local "
                        "StableDiffusionInpaintPipeline folder (or its Hugging Face cache entry; never downloaded) "
                        "instead of the from-scratch painter; config diffusion-sd, at the task's resolution"),
            MASK_SOURCE_OPTION,
            Option("mask_options", help="overrides of the painters' mask deformation options, e.g. {turns: false}"),
        ),
        learned=Learned(kind=KIND, folder="diffusion", noun="diffusion painters", title="diffusion",
                        plan=plan, checkpoint_file=painter_file, train=train, load=load, keys=KEYS,
                        size_of=lambda state: (int(state["resolution"]), int(state["resolution"])),
                        needs_goods=True, add_commands=add_commands,
                        item=lambda partition, defect: f"the P{partition} '{defect}' diffusion painter"),
        requires=lambda options: ("dfmgan",) if uses_dfmgan_masks(options) else (),
        check_options=check_options)
