"""DFMGAN's declaration (`--aug dfmgan`): a whole-image generator trained when missing, stage 1 (the backbone) once
per category and stage 2 per partition and defect type, cached in the `--generators` folder itself
(backbone/, p<k>/<defect>/defect_<defect>.pt, index.json)."""

from __future__ import annotations

from pathlib import Path

import torch

from generators.dfmgan import api
from generators.dfmgan.checkpoint import KEYS
from generators.dfmgan.config import resolution_hw, resolution_value, size_for_aspect, with_resolution
from generators.dfmgan.sampler import DFMGANGenerator
from generators.dfmgan.train_backbone import BACKBONE_FILE
from generators.dfmgan.train_defect import defect_file
from generators.dfmgan.cli import add_commands
from generators.registry import register_generator
from generators.spec import BuildRequest, GeneratorSpec, Learned, Option, Plan, TrainJob
from inspect_train.errors import InputError

DEFAULT_CONFIG = "dfmgan-256"
SAMPLER_OPTIONS = ("truncation", "precision", "compile", "channels_last")


def config_for_task(config: dict, task_size: tuple[int, int]) -> dict:
    """The DFMGAN config at the task's aspect: the preset's resolution becomes the short side (dfmgan-64 for a
    192x64 task trains at 192x64, dfmgan-tiny for 48x16 at 96x32), so a long part is not squashed into a square
    for the generator and stretched back; a square task keeps a square generator."""
    size = size_for_aspect(min(resolution_hw(config)), tuple(task_size))
    return config if size == resolution_hw(config) else with_resolution(config, size)


def plan(data, options: dict, device: str) -> Plan:
    """The run's DFMGAN config (`config`, default dfmgan-256) at the task's aspect, and its step counts
    (`backbone_steps`, `defect_steps`; None: the config's own). The online dataset resizes the samples to the
    task's resolution."""
    name = options.get("config") or DEFAULT_CONFIG
    config = config_for_task(api.load_config(name), tuple(data.size))
    height, width = resolution_hw(config)
    note = ""
    if torch.device(device).type == "cpu" and min(height, width) >= 128:
        note = (f"note: training {config.get('name', name)} on a CPU takes days (stage 1 of dfmgan-256 sees about "
                "0.36 images/s on 2 cores); use a GPU, or --gan-config dfmgan-64 for a CPU-sized run")
    return Plan(config, (height, width), resolution_value((height, width)),
                settings={"backbone_steps": options.get("backbone_steps"),
                          "defect_steps": options.get("defect_steps")}, note=note)


def backbone(cache) -> Path:
    """The cache's stage-1 backbone, trained once per folder (continued when a checkpoint is already there,
    e.g. from `gan fit-backbone --out FOLDER/backbone`, or a killed run)."""
    def cached() -> Path | None:
        entry = cache.index.get("backbone")
        if entry and (cache.folder / entry["checkpoint"]).exists():
            return cache.folder / entry["checkpoint"]
        return None

    def train() -> Path:
        out = cache.folder / "backbone"
        steps = cache.plan.settings["backbone_steps"]
        if (out / BACKBONE_FILE).exists():
            cache.say(f"DFMGAN stage 1: continuing the backbone checkpoint in {out} to its last step")
        else:
            cache.say(f"DFMGAN stage 1: training the backbone on {len(cache.data.train_good)} train/good images "
                      f"-> {out}")
        path = api.fit_backbone(cache.data.train_good.images, cache.config, out, steps=steps, seed=cache.seed,
                            device=cache.device, resume=True, progress=cache.progress, **cache.dist())
        entry = {"checkpoint": cache.relative(path), "steps": steps}
        cache.update_index(lambda index: index.__setitem__("backbone", entry))
        return Path(path)

    return cache.once("backbone", cached, train)[0]


def train(job: TrainJob) -> Path:
    cache = job.cache
    subset = cache.data.defects[job.defect].select(job.names)
    return api.fit_defect(backbone(cache), subset.images, subset.masks, job.defect, job.out, config=cache.config,
                      steps=cache.plan.settings["defect_steps"], seed=cache.seed, device=cache.device,
                      resume=job.resume, progress=cache.progress, extra=job.extra, **cache.dist())


def sampler_options(options: dict) -> dict:
    return {k: options[k] for k in SAMPLER_OPTIONS if options.get(k) is not None}


def build(request: BuildRequest) -> DFMGANGenerator:
    return DFMGANGenerator(request.checkpoints("dfmgan"), device=request.device,
                           paired_good=request.paired_good, **sampler_options(request.options))


def load(checkpoints: dict[str, Path], goods, device, options: dict) -> DFMGANGenerator:
    return DFMGANGenerator(checkpoints, device=device, **sampler_options(options))


def check_options(options: dict) -> None:
    truncation = options.get("truncation")
    if truncation is not None and not 0.0 <= float(truncation) <= 1.0:
        raise InputError(f"--truncation {truncation}: must be between 0 and 1")
    for key in ("backbone_steps", "defect_steps"):
        if options.get(key) is not None and int(options[key]) < 0:
            raise InputError(f"--{key.replace('_', '-')} {options[key]}: must be 0 or more")


@register_generator
def dfmgan() -> GeneratorSpec:
    return GeneratorSpec(
        "dfmgan", "DFMGAN: a StyleGAN2 backbone on train/good plus defect-aware residual blocks per defect type",
        build,
        options=(
            Option("config", "--gan-config", help="--aug dfmgan: DFMGAN config (default: the preset's "
                   "generators.dfmgan.config, else dfmgan-256)"),
            Option("backbone_steps", "--backbone-steps", int, help="--aug dfmgan: stage-1 steps when the backbone "
                   "is trained here (default: the preset's, else the DFMGAN config's)"),
            Option("defect_steps", "--defect-steps", int,
                   help="--aug dfmgan: stage-2 steps per defect type and partition"),
            Option("truncation", "--truncation", float, metavar="PSI",
                   help="dfmgan: truncation psi of the defect code (1 = none; lower = more typical defects; the "
                        "part is never truncated)", commands=("classify", "segment", "detect", "generate",
                                                              "evaluate-gen")),
            Option("precision", help="fp32, bf16 or fp16 sampling"),
            Option("compile", help="torch.compile the sampler"),
            Option("channels_last", help="sample in channels_last memory format"),
        ),
        learned=Learned(kind="dfmgan-defect", folder="", keys=KEYS["dfmgan-defect"], noun="DFMGAN generators", title="DFMGAN stage 2",
                        plan=plan, checkpoint_file=defect_file, train=train, load=load,
                        size_of=lambda state: resolution_hw(state), add_commands=add_commands),
        check_options=check_options,
        old_keys={"dfmgan_config": "config", "gan_config": "config", "gan_backbone_steps": "backbone_steps",
                  "gan_defect_steps": "defect_steps"})
