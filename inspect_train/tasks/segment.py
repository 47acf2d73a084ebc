"""`inspect-train segment`: where is the defect? Per partition, train a segmenter on the
base set's real defects, train/good and (augmented arm) fresh synthetic defects every
batch; train the real-only baseline the same way; evaluate both on the partition's test set.

Protocol: the generator and the model see only the partition's base-set defects and
train/good; the test part of each defect type and test/good are used once, to score
the final model of a fixed schedule (no checkpoint selection).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

from inspect_train.data.category import CategoryData, load_category
from inspect_train.distributed import DistContext
from inspect_train.data.images import parse_resolution
from inspect_train.config_files import read_preset
from inspect_train.errors import InputError
from inspect_train.metrics.segmentation import METRIC_KEYS, segmentation_metrics
from inspect_train.models.draem import DraemLoss
from inspect_train.models.segmenters import MODELS, build_segmenter, input_divisor
from inspect_train.online import GOOD, OnlineBatches, RealPool
from inspect_train.protocol import get_partition, manifest_for_run
from inspect_train.tasks.common import (
    debug_dump,
    gather_union,
    main_first,
    make_optimizer,
    open_writer,
    prepare_model,
    sample_grid,
    seed_everything,
    start_run,
    train_fixed_steps,
    unwrap,
    finish_training,
)

AUGS = ("none", "crop-paste", "cut-paste", "perlin", "dfmgan")
GRID_IMAGES = 8


# ----------------------------------------------------------------------------- settings


def load_segment_config(name_or_path: str) -> dict:
    """'segment-tiny' -> configs/segment-tiny.yaml; a path is read as-is."""
    config, path = read_preset(name_or_path, "segment")
    if not isinstance(config, dict) or not isinstance(config.get("models"), dict):
        raise InputError(f"{path}: a segment config must be a mapping with a 'models' section")
    missing = [k for k in ("steps", "batch_size", "lr", "synthetic_ratio") if k not in config]
    if missing:
        raise InputError(f"{path}: missing keys {', '.join(missing)}")
    if "dfmgan_config" in config:
        raise InputError(f"{path}: 'dfmgan_config' is now 'gan_config' (the same key as in the classify presets)")
    config["name"] = config.get("name") or path.stem
    return config


@dataclass
class SegmentJob:
    """Everything one `segment` command needs; built by the CLI, usable from Python."""

    out: Path
    aug: str = "perlin"
    model: str = "unet"
    data: Path | None = None
    category: str | None = None
    config: dict = field(default_factory=lambda: load_segment_config("segment-tiny"))
    encoder: str | None = None
    weights: str | None = None
    partitions: list[int] = field(default_factory=lambda: [1, 2, 3])
    manifest: str | None = None
    seed: int = 0
    device: str = "auto"
    baseline: bool = True
    generators_dir: Path | None = None  # dfmgan: cached generators (default <out>/generators)
    gan_config: str | None = None  # dfmgan: config name or path (default: the preset's gan_config)
    backbone_steps: int | None = None  # dfmgan: stage-1 steps (default: the preset's gan_backbone_steps, else the DFMGAN config's)
    defect_steps: int | None = None  # dfmgan: stage-2 steps per defect type (default: as for backbone_steps)
    command: str = ""
    progress: bool = True

    def check(self) -> None:
        if self.aug not in AUGS:
            raise InputError(f"--aug '{self.aug}': unknown (choose from {', '.join(AUGS)})")
        if self.model not in MODELS:
            raise InputError(f"--model '{self.model}': unknown (choose from {', '.join(MODELS)})")
        if self.aug == "none" and not self.baseline:
            raise InputError("--aug none with --no-baseline leaves nothing to train")
        if not self.partitions or min(self.partitions) < 1:
            raise InputError(f"--partitions must be numbers from 1 (got {self.partitions})")
        for key in ("steps", "batch_size"):
            if int(self.config[key]) < 1:
                raise InputError(f"{key} must be at least 1 (got {self.config[key]})")
        if not 0.0 < float(self.config["synthetic_ratio"]) <= 1.0 and self.aug != "none":
            raise InputError(f"--synthetic-ratio must be in (0, 1] (got {self.config['synthetic_ratio']})")

    def model_config(self) -> dict:
        config = dict(self.config["models"].get(self.model) or {})
        if self.encoder:
            config["encoder"] = self.encoder
        return config


# ----------------------------------------------------------------------------- data


@dataclass
class TestSet:
    """The partition's test defect images (all types) followed by test/good, with masks."""

    names: list[str]
    images: torch.Tensor  # uint8 (N, C, H, W)
    masks: torch.Tensor  # bool (N, 1, H, W)
    n_defect: int


def test_set(data: CategoryData, partition: dict) -> TestSet:
    names, images, masks = [], [], []
    for defect in sorted(partition["defects"]):
        chosen = data.defects[defect].select(partition["defects"][defect]["test"])
        names += [f"{defect}/{n}" for n in chosen.names]
        images.append(chosen.images)
        masks.append(chosen.masks)
    n_defect = len(names)
    good = data.test_good
    names += [f"good/{n}" for n in good.names]
    images.append(good.images)
    masks.append(torch.zeros((len(good), 1, *good.images.shape[2:]), dtype=torch.bool))
    return TestSet(names, torch.cat(images), torch.cat(masks), n_defect)


def load_data(job: SegmentJob, ctx: DistContext | None = None) -> CategoryData:
    """The user's category at the config's resolution, or the toy dataset written under the output folder."""
    size = parse_resolution(job.config.get("resolution"))
    if job.data is None:
        from inspect_train.data.toy import write_toy_dataset

        folder = job.out / "toy-data"
        root = main_first(ctx or DistContext(), lambda: write_toy_dataset(folder, seed=0), lambda: folder)
        return load_category(root, "toy", size=size)
    if not job.category:
        raise InputError("--category is needed with --data")
    return load_category(job.data, job.category, size=size)


def check_resolution(data: CategoryData, job: SegmentJob) -> None:
    divisor = input_divisor(job.model, job.model_config())
    h, w = data.size
    if h % divisor or w % divisor:
        raise InputError(
            f"--model {job.model}: image size {h}x{w} must be a multiple of {divisor} on both sides; "
            f"pass --resolution, e.g. {max(divisor, round(h / divisor) * divisor)}x{max(divisor, round(w / divisor) * divisor)}"
        )


# ----------------------------------------------------------------------------- training


class SegmentationLoss(nn.Module):
    """BCE + Dice on defect logits (smp's losses); Dice pools the whole batch so good images count."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0):
        super().__init__()
        self.bce_weight, self.dice_weight = bce_weight, dice_weight
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        dice = self.dice(logits, masks)
        return {"loss": self.bce_weight * bce + self.dice_weight * dice, "bce": bce, "dice": dice}


def draem_targets(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction target and per-pixel weight for each sample of a batch.

    Synthetic samples: the generator's paired good image (weight 1). Real good
    images: themselves. Real defect images have no defect-free twin: they are
    their own target outside the defect only (weight 1 - mask).
    """
    targets = batch.images.clone()
    weights = 1.0 - batch.masks
    goods = getattr(batch, "synthetic_goods", None)
    if goods is not None:
        syn = batch.synthetic
        targets[syn] = goods.to(targets.dtype)
        weights[syn] = 1.0
    return targets, weights


def train_model(model: nn.Module, batches: OnlineBatches, job: SegmentJob, writer, tag: str,
                world_size: int = 1) -> dict:
    """A fixed schedule of `steps` AdamW steps with cosine decay; returns what the report states.

    `model` may be DDP-wrapped; `batches` is then this rank's share, and the counts reported are over all ranks.
    """
    config, steps = job.config, int(job.config["steps"])
    lr = float(job.model_config().get("lr", config["lr"]))
    optimizer, scheduler = make_optimizer(model, steps, lr, float(config.get("weight_decay", 0.0)))
    if job.model == "draem":
        criterion = DraemLoss(unwrap(model).config).to(batches.device)

        def step_fn(net, batch):
            reconstruction, logits = net(batch.images)
            targets, weights = draem_targets(batch)
            terms = criterion(reconstruction, targets, logits, batch.masks, weights)
            return terms["loss"], {k: v.detach() for k, v in terms.items() if k != "loss"}
    else:
        criterion = SegmentationLoss(**(config.get("loss") or {})).to(batches.device)

        def step_fn(net, batch):
            terms = criterion(net(batch.images), batch.masks)
            return terms["loss"], {k: v.detach() for k, v in terms.items() if k != "loss"}

    grid_steps = {0, steps // 2, steps - 1}

    def on_batch(step, batch):
        if writer is not None and step in grid_steps:
            writer.add_image("train/batch (image, mask)", sample_grid(batch.images, batch.masks), step)

    started = time.time()
    last = train_fixed_steps(model, batches, steps, step_fn, optimizer, scheduler, writer=writer, desc=tag,
                             on_batch=on_batch, progress=job.progress and writer is not None)
    if not math.isfinite(last.get("loss", math.nan)):
        raise RuntimeError(f"{tag}: the training loss is {last.get('loss')} at the end of the schedule")
    return {
        "steps": steps,
        "batch_size": batches.batch_size * world_size,
        "lr": lr,
        "epochs": round(batches.epochs * world_size, 2),
        "real_seen": batches.real_seen * world_size,
        "synthetic_seen": batches.synthetic_seen * world_size,
        "final_loss": round(last["loss"], 6),
        "train_seconds": round(time.time() - started, 1),
    }


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_maps(model: nn.Module, images: torch.Tensor, device, batch_size: int, is_draem: bool) -> torch.Tensor:
    """Defect probability maps, float (N, 1, H, W) on the CPU, from uint8 images."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255.0)
        logits = model(x)[1] if is_draem else model(x)
        out.append(torch.sigmoid(logits).float().cpu())
    return torch.cat(out)


def _nan_to_none(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or not math.isfinite(v) else round(float(v), 6)) for k, v in metrics.items()}


def log_evaluation(writer, tests: TestSet, maps: torch.Tensor, metrics: dict, step: int) -> None:
    """Metrics, the pixel PR curve, and a grid of image | true mask | predicted map for a few defect images."""
    from torchvision.utils import make_grid

    for key, value in metrics.items():
        if value is not None:
            writer.add_scalar(f"test/{key}", value, step)
    writer.add_pr_curve("test/pixel_pr", tests.masks.flatten(), maps.flatten(), step, num_thresholds=201)
    picks = list(range(min(GRID_IMAGES, tests.n_defect)))
    if not picks:
        return
    images = tests.images[picks].float() / 255.0
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    masks = tests.masks[picks].float().expand(-1, 3, -1, -1)
    preds = maps[picks].expand(-1, 3, -1, -1)
    rows = torch.stack([images, masks, preds], dim=1).flatten(0, 1)
    writer.add_image("test/image|mask|prediction", make_grid(rows, nrow=3, padding=2, pad_value=0.5), step)


# ----------------------------------------------------------------------------- one arm, one partition, the run


def run_arm(job, data, partition, tests, generator, arm: str, device, tb_root: Path,
            ctx: DistContext | None = None) -> tuple[dict | None, dict, set]:
    """Train one arm's model from the run seed, evaluate it once on the test set, save it.

    Under torchrun each rank trains on its share of the batch (own seed), DDP averages the gradients, and
    rank 0 alone logs, evaluates and saves; the other ranks return None for the metrics.
    """
    ctx = ctx or DistContext(device=device)
    k = partition["partition"]
    base_names = {t: split["base"] for t, split in partition["defects"].items()}
    class_names = [GOOD, *sorted(base_names)]
    pool = RealPool(data, base_names, class_names, device)
    batches = OnlineBatches(
        pool,
        generator,
        batch_size=ctx.local_batch(int(job.config["batch_size"])),
        synthetic_ratio=float(job.config["synthetic_ratio"]),
        seed=job.seed + ctx.seed_offset(),
        device=device,
        augment_real=bool(job.config.get("augment_real", False)),
    )
    seed_everything(job.seed)
    model = build_segmenter(
        job.model, data.channels, job.model_config(), encoder=job.model_config().get("encoder", "resnet18"),
        weights=job.weights,
    ).to(device)
    model = prepare_model(model, ctx, find_unused_parameters=True)
    writer = open_writer(tb_root / f"P{k}" / arm) if ctx.is_main else None
    try:
        schedule = train_model(model, batches, job, writer, tag=f"P{k} {arm}", world_size=ctx.world_size)
        model = finish_training(model, ctx)
        debug_dump(ctx, model, f"P{k}-{arm}")
        served = gather_union(ctx, set(batches.served_real))
        if not ctx.is_main:
            ctx.barrier()  # rank 0 evaluates and saves
            return None, schedule, served
        maps = predict_maps(model, tests.images, device, int(job.config.get("eval_batch_size", 32)), job.model == "draem")
        metrics = _nan_to_none(
            segmentation_metrics(maps, tests.masks, sigma=float(job.config.get("smooth_sigma", 4.0)))
        )
        log_evaluation(writer, tests, maps, metrics, schedule["steps"])
    finally:
        if writer is not None:
            writer.close()
    ckpt = job.out / f"P{k}" / arm / "model.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": job.model, "config": job.model_config(), "channels": data.channels,
                "size": list(data.size), "state_dict": model.state_dict()}, ckpt)
    ctx.barrier()
    return metrics, schedule, served


def generator_maker(job: SegmentJob, data: CategoryData, device, manifest_path: Path, ctx: DistContext | None = None):
    """make(partition, base_names) -> the augmented arm's generator (the classify task's factory and DFMGAN cache).

    DFMGAN generators are trained when missing (stage 1 once, stage 2 per partition and defect type) at the
    DFMGAN config's square resolution and cached under `generators_dir`; their samples are resized to the
    segmenter's resolution by the online dataset.
    """
    from inspect_train.tasks.generators import generator_factory, open_dfmgan_cache

    options = dict((job.config.get("generators") or {}).get(job.aug) or {})
    cache = None
    if job.aug == "dfmgan":
        say = print if ctx is None or ctx.is_main else (lambda message: None)
        cache = open_dfmgan_cache(
            data, job.config, job.generators_dir or job.out / "generators", seed=job.seed, device=device,
            manifest_path=manifest_path, gan_config=job.gan_config, backbone_steps=job.backbone_steps,
            defect_steps=job.defect_steps, progress=job.progress, ctx=ctx, say=say)
        options.setdefault("paired_good", job.model == "draem")  # only DRAEM reconstructs towards the good twin
    return generator_factory(job.aug, data, device, options, dfmgan=cache)


def run_segment(job: SegmentJob) -> dict | None:
    """Train and evaluate every requested partition and arm; write results.json, report.md and TensorBoard logs.

    Under `torchrun --nproc_per_node N` every rank trains its share of each batch; rank 0 writes and returns
    the results, the other ranks return None.
    """
    from inspect_train.distributed import shutdown

    job.check()
    ctx = start_run(job.device)
    try:
        return _run_segment(job, ctx)
    finally:
        shutdown(ctx)


def _run_segment(job: SegmentJob, ctx: DistContext) -> dict | None:
    from inspect_train.report import write_results

    ctx.local_batch(int(job.config["batch_size"]))  # fail early when the batch does not divide over the processes
    job.out = Path(job.out)
    job.out.mkdir(parents=True, exist_ok=True)
    device = ctx.device
    if device.type == "cpu" and job.config.get("cpu_threads"):
        torch.set_num_threads(int(job.config["cpu_threads"]))
    data = load_data(job, ctx)
    check_resolution(data, job)
    count = max(3, *job.partitions)
    manifest, manifest_path = main_first(
        ctx, lambda: manifest_for_run(data.index, job.manifest, job.out, count, job.seed),
        lambda: manifest_for_run(data.index, job.manifest or str(job.out / "manifest.json"), job.out, count, job.seed))
    tb_root = job.out / "tb"
    make_generator = generator_maker(job, data, device, manifest_path, ctx) if job.aug != "none" else None
    entries = []
    for k in job.partitions:
        partition = get_partition(manifest, k)
        tests = test_set(data, partition)
        entry: dict[str, Any] = {
            "partition": k,
            "baseline": None,
            "augmented": None,
            "real_defects": sum(len(s["base"]) for s in partition["defects"].values()),
            "test_defects": tests.n_defect,
            "test_good": len(tests.names) - tests.n_defect,
        }
        used: set = set()
        for arm in (["baseline"] if job.baseline else []) + (["augmented"] if job.aug != "none" else []):
            generator = None
            if arm == "augmented":
                generator = make_generator(k, {t: split["base"] for t, split in partition["defects"].items()})
            entry[arm], schedule, served = run_arm(job, data, partition, tests, generator, arm, device, tb_root, ctx)
            entry[f"{arm}_epochs"] = schedule["epochs"]
            entry[f"{arm}_final_loss"] = schedule["final_loss"]
            entry[f"{arm}_train_seconds"] = schedule["train_seconds"]
            if arm == "augmented":
                entry["synthetic_samples_seen"] = schedule["synthetic_seen"]
            used |= served
        # The protocol's audit trail: every real image any arm trained on, as (class, file name).
        entry["real_images_used"] = [list(item) for item in sorted(used)]
        entries.append(entry)
    if not ctx.is_main:
        return None
    config = {**job.config, "model": job.model, "model_config": job.model_config(), "weights": job.weights,
              "seed": job.seed, "resolution": list(data.size), "channels": data.channels,
              "data": str(job.data) if job.data else "toy", "category": job.category or "toy",
              **({"processes": ctx.world_size} if ctx.enabled else {})}
    schedule = {"steps": int(job.config["steps"]), "batch_size": int(job.config["batch_size"]),
                "synthetic_ratio": float(job.config["synthetic_ratio"]) if job.aug != "none" else 0.0,
                "model": job.model, "evaluated": "last step (fixed schedule, no checkpoint selection)"}
    if job.model == "draem":
        schedule["draem_anomalies"] = (f"baseline: real base-set defects only; augmented: {job.aug}"
                                       if job.aug != "none" else "real base-set defects only (no generator)")
    return write_results(job.out, "segment", job.aug, job.command, config, manifest_path, entries,
                         list(METRIC_KEYS), extra={"schedule": schedule})
