"""The painter's declaration (`--aug inpaint`): one painter per partition and defect type, trained when missing on
that partition's base images and train/good, cached under `--generators`/inpaint (p<k>/<defect>/inpaint_<defect>.pt,
index.json). Painters are square, at their config's resolution; the online dataset resizes their samples."""

from __future__ import annotations

from pathlib import Path

from generators.inpaint import api
from generators.inpaint.api import LOSSES, InpaintGenerator, build_inpaint_generator
from generators.inpaint.checkpoint import KIND, painter_file
from generators.inpaint.masks import MASK_SOURCE_OPTION, check_mask_source
from generators.inpaint.cli import add_commands
from generators.registry import register_generator
from generators.spec import BuildRequest, GeneratorSpec, Learned, Option, Plan, TrainJob
from inspect_train.errors import InputError

PAINTER_KEYS = ("config", "channels", "resolution", "defect_type", "painter_ema")


def plan(data, options: dict, device: str) -> Plan:
    """`config` None: inpaint-tiny for a task at 32 px or less, inpaint-64 up to 64 px, else inpaint-128; `steps`
    None: the config's; `loss` None: the config's. A cached painter is reused only with the same steps and loss."""
    config = api.load_config(options.get("config") or api.default_config_for(tuple(data.size)))
    side = int(config["resolution"])
    train = config["train"]
    steps = options.get("steps")
    wanted = {"loss": options.get("loss") or train.get("loss", "nsgan"),
              "steps": steps if steps is not None else int(train["steps"])}
    return Plan(config, (side, side), side, trained_with=wanted, settings={"steps": steps, "loss": wanted["loss"]})


def train(job: TrainJob) -> Path:
    cache = job.cache
    subset = cache.data.defects[job.defect].select(job.names)
    return api.fit_inpaint(subset.images, subset.masks, cache.data.train_good.images, job.defect, job.out,
                       config=cache.config, steps=cache.plan.settings["steps"], loss=cache.plan.settings["loss"],
                       seed=cache.seed, device=cache.device, resume=job.resume, progress=cache.progress,
                       extra=job.extra, **cache.dist())


def uses_dfmgan_masks(options: dict) -> bool:
    return options.get("mask_source") == "dfmgan"


def build(request: BuildRequest) -> InpaintGenerator:
    """The painters paint the train/good images at their own resolution (the category as loaded for them)."""
    options = dict(request.options)
    mask_checkpoints = options.pop("mask_checkpoints", None)
    if uses_dfmgan_masks(options) and mask_checkpoints is None:
        mask_checkpoints = request.checkpoints("dfmgan")
    data = request.data_for("inpaint")
    return build_inpaint_generator(request.checkpoints("inpaint"), data.train_good, request.base_sets(data),
                                   request.device,
                                   mask_source=options.get("mask_source") or "base",
                                   mask_checkpoints=mask_checkpoints, mask_options=options.get("mask_options"))


def load(checkpoints: dict[str, Path], goods, device, options: dict) -> InpaintGenerator:
    """Painters from their files alone: each paints into its own stored base masks (deformed), on `goods`."""
    return InpaintGenerator(checkpoints, goods, None, device)


def check_options(options: dict) -> None:
    """Checked before any arm trains: a typo must not surface after the baseline's hour."""
    check_mask_source(options.get("mask_source"))
    if options.get("steps") is not None and int(options["steps"]) < 0:
        raise InputError(f"--inpaint-steps {options['steps']}: must be 0 or more")


@register_generator
def inpaint() -> GeneratorSpec:
    return GeneratorSpec(
        "inpaint", "the defect painter: paints one defect type into a mask on a real good image", build,
        options=(
            Option("config", "--inpaint-config", help="--aug inpaint: painter config, a name in configs/ or a path "
                   "(default: the preset's generators.inpaint.config, else inpaint-tiny up to 32 px, inpaint-64 up "
                   "to 64, inpaint-128 above); a smaller one reuses painters trained for a smaller task"),
            Option("steps", "--inpaint-steps", int, help="--aug inpaint: training steps of each painter (per defect "
                   "type and partition) when it is trained here (default: the inpaint config's)"),
            Option("loss", "--inpaint-loss", choices=LOSSES, help="--aug inpaint: the painters' adversarial loss "
                   "when they are trained here (default: the inpaint config's)"),
            MASK_SOURCE_OPTION,
            Option("mask_options", help="overrides of the painters' mask deformation options, e.g. {turns: false}"),
        ),
        learned=Learned(kind=KIND, folder="inpaint", noun="inpaint painters", title="inpaint",
                        plan=plan, checkpoint_file=painter_file, train=train, load=load, keys=PAINTER_KEYS,
                        size_of=lambda state: (int(state["resolution"]), int(state["resolution"])),
                        needs_goods=True, add_commands=add_commands,
                        item=lambda partition, defect: f"the P{partition} '{defect}' painter"),
        requires=lambda options: ("dfmgan",) if uses_dfmgan_masks(options) else (),
        check_options=check_options,
        old_keys={"inpaint_config": "config", "inpaint_steps": "steps", "inpaint_loss": "loss"})
