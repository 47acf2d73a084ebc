"""The protocol runner every downstream task plugs into: one shape for classify, segment and detect.

Per partition of the manifest, every arm (`none` = the real-only baseline, then one per `--aug`) trains the
same model from the same initial weights, for the same fixed schedule, on the same real base-set images,
with the same seed; the arms differ only in the fresh synthetic samples mixed into each batch. The final
model of each arm is evaluated once on the partition's test set (nothing is chosen on test data), saved
with everything `predict` and `export` need, and compared with the baseline on the same test images.

A task supplies what differs (see `Task`): its classes, model, loss, evaluation, pictures and paired tests.
Output layout, the same for every task:

    OUT/config.yaml  manifest.json  results.json  report.md  summary.png
    OUT/P<k>/<arm>/model.pt  predictions.csv          OUT/tb/P<k>/<arm>/   OUT/generators/ (learned generators)

Open set (`classify --open-set`, see inspect_train.tasks.open_set): inside each partition the same arms run once
per held-out defect type, on the partition without that type, into OUT/P<k>/<arm>/unknown-<type>/ (and
OUT/tb/P<k>/<arm>/unknown-<type>/); the test set adds every image of the held-out type, labelled unknown.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import yaml
from torch import nn

from generators.mixture import MixtureGenerator
from generators.registry import REAL_ONLY, generator_names, get_spec
from generators.spec import BuildRequest
from inspect_train.commands._cmdline import command_line
from inspect_train.data.category import CategoryData, load_category
from inspect_train.data.fingerprint import category_digest
from inspect_train.data.images import parse_resolution
from inspect_train.data.mvtec import scan_category
from inspect_train.data.toy import write_toy_dataset
from inspect_train.distributed import shutdown
from inspect_train.errors import InputError
from inspect_train.models.checkpoint import save_model
from inspect_train.online import GOOD, OnlineBatches, RealPool
from inspect_train.output_paths import check_output_folder, make_folder, portable_path
from inspect_train.protocol import get_partition, manifest_for_run
from inspect_train.report import print_summary, run_record, write_results
from inspect_train.settings import TaskSettings, resolve_settings, write_config
from inspect_train.arms import arm_names, check_mixture, parse_arm, references
from inspect_train.steering import SteerSettings, Steering
from inspect_train.tasks import generators as learned
from inspect_train.tasks.common import (broadcast_object, debug_dump, finish_training, gather_union, make_optimizer,
                                        prepare_model, sample_grid, seed_everything, start_run,
                                        train_fixed_steps, unwrap)
from inspect_train.tasks.open_set import held_out_types, known_part, partition_entry, section, with_unknown
from inspect_train.tasks.resume import FinishedArms, arm_folder, run_stamp
from inspect_train.tasks.test_set import TestSet, make_test_set
from inspect_train.tb_writer import open_writer

BASELINE = "none"


@dataclass
class Evaluation:
    """One arm's scores on the test set: the metrics, and the raw outputs paired tests compare
    (class probabilities (N, K) for a classifier, defect probability maps (N, 1, H, W) for a segmenter, the boxes
    found per image for a detector: tasks.detect.Detections)."""

    metrics: dict[str, Any]
    outputs: Any
    unknown_scores: dict[str, torch.Tensor] | None = None  # open set: per image, each unknown score (N,)


class Task(Protocol):
    name: str  # the command: classify, segment, detect
    settings_class: type
    toy_preset: str  # preset without --data
    data_preset: str  # preset with --data
    def summary_metrics(self, settings) -> list[str]: ...  # scalar metrics summarised over partitions
    headline: str  # the metric of the bar chart
    find_unused_parameters: bool  # DDP: the model holds weights no forward uses

    def check_settings(self, settings) -> None: ...
    def class_names(self, settings, defect_types: list[str]) -> list[str]: ...
    def check_data(self, settings, data: CategoryData) -> None: ...
    def build_model(self, settings, data: CategoryData, classes: list[str]) -> nn.Module: ...
    def architecture(self, settings, data: CategoryData, classes: list[str]) -> dict: ...
    def learning_rate(self, settings) -> float: ...
    # optional: make_optimizer(model, steps, settings) -> (optimizer, scheduler), or None for AdamW + cosine
    def paired_good(self, settings) -> bool: ...
    def step_fn(self, settings, device) -> Callable: ...
    def evaluate(self, model, tests: TestSet, settings, device) -> Evaluation: ...
    def log_evaluation(self, writer, tests: TestSet, evaluation: Evaluation, settings) -> None: ...
    def prediction_rows(self, tests: TestSet, evaluation: Evaluation, threshold: dict | None,
                        settings) -> list[dict]: ...
    def paired_tests(self, tests: TestSet, baseline: Evaluation, arm: Evaluation, settings, seed: int) -> dict: ...
    def decision_threshold(self, model, pool: RealPool, settings, device) -> dict | None: ...
    # Optional: write_outputs(folder, tests, evaluation, threshold, settings) writes a task's own files beside
    # predictions.csv (detect: the test set and the detections as COCO JSON).
    # Optional: saved_types, the classes of its own in Evaluation.outputs (read back by --resume, which unpickles
    # tensors, plain values and numpy arrays only, and these).
    # A task that can run --open-set also has `open_set_metrics: list[str]` (what such a run summarises) and
    # `open_set_headline: str`, and its evaluate() scores the TestSet's `unknown` images (see tasks.classify).


# ----------------------------------------------------------------------------- arms and data


def arms_from(augs: list[str], baseline: bool, steers: list[str] | None = None) -> list[str]:
    """The arms of a run in order: the real-only baseline first (unless dropped), then each --aug once per --steer
    mode (`off`: its own name; `types`, `hard`: `<aug>+types`, `<aug>+hard`)."""
    for aug in augs:
        check_mixture(aug, generator_names(), REAL_ONLY)
    if not baseline and BASELINE in augs:
        raise InputError("--aug none is the real-only baseline; it cannot go with --no-baseline")
    arms = ([BASELINE] if baseline else []) + arm_names([a for a in augs if a != BASELINE], steers or ["off"],
                                                        REAL_ONLY)
    arms = list(dict.fromkeys(arms))
    if not arms:
        raise InputError("nothing to train: --no-baseline and no --aug")
    return arms


def check_steering(task: Task, arms: list[str]) -> None:
    """A task steers when it gives each training row's loss and scores candidates (`sample_losses`)."""
    steered = [arm for arm in arms if parse_arm(arm, REAL_ONLY).steer != "off"]
    if steered and not hasattr(task, "sample_losses"):
        raise InputError(f"--steer {parse_arm(steered[0], REAL_ONLY).steer}: {task.name} does not give the loss of "
                         "each training sample that steering reads")


def steering_for(task: Task, settings: TaskSettings, arm: str, classes: list[str]) -> Steering | None:
    """The arm's steering: for a steered arm or a mixture (which splits each type over its generators); None for
    a plain arm, whose draw stays the even split."""
    plan = parse_arm(arm, REAL_ONLY)
    if plan.steer == "off" and len(plan.generators) < 2:
        return None
    return Steering(SteerSettings(plan.steer, settings.steer_temperature, settings.steer_floor,
                                  settings.steer_candidates, settings.steer_momentum),
                    [c for c in classes if c != GOOD], list(plan.generators))


def base_names_of(part: dict, classes: list[str]) -> dict[str, list[str]]:
    return {t: part["defects"][t]["base"] for t in classes if t != GOOD}


def real_pool_size(data: CategoryData, part: dict, classes: list[str]) -> int:
    """How many real images a run on this partition trains on: the base sets, and train/good when it is a class."""
    return sum(len(names) for names in base_names_of(part, classes).values()) + (
        len(data.train_good) if GOOD in classes else 0)


def steps_for_epochs(epochs: float, data: CategoryData, part: dict, classes: list[str], batch_size: int) -> int:
    """An epoch is one pass over the partition's real training images at the full batch size."""
    return max(1, math.ceil(epochs * real_pool_size(data, part, classes) / batch_size))


def _steps_for_epochs(task: Task, settings: TaskSettings, epochs: float, data: CategoryData, part: dict,
                      held_out: list[str] | None) -> int:
    """--epochs as steps, the same for every run of the command. Open set: a run trains on the known types only,
    so the epoch is the mean over the held-out runs of their known pools (the held-out base images never count)."""
    views = [known_part(part, t) for t in held_out] if held_out else [part]
    pools = [real_pool_size(data, v, task.class_names(settings, sorted(v["defects"]))) for v in views]
    return max(1, math.ceil(epochs * (sum(pools) / len(pools)) / settings.batch_size))


# ----------------------------------------------------------------------------- one arm


def candidate_scorer(task: Task, model: nn.Module, settings: TaskSettings) -> Callable:
    """scorer(images, masks, labels) -> each candidate's loss under the model as it is now (no gradient)."""
    def score(images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        net = unwrap(model)
        net.eval()  # scoring must not move the batch-norm statistics the training step uses
        with torch.no_grad():
            hardness = task.sample_losses(net, images, masks, labels, settings)
        net.train()
        return hardness

    return score


def train_arm(task: Task, settings: TaskSettings, arm: str, data: CategoryData, part: dict, classes: list[str],
              generator, seed: int, device, log_dir: Path, ctx, label: str | None = None,
              steering: Steering | None = None):
    """Train one arm's model on the real pool plus fresh samples of `generator`; returns
    (the plain trained model, its OnlineBatches, the TensorBoard writer (rank 0) or None, last logged scalars).

    Under torchrun each rank draws its share of the batch from its own seed and DDP averages the gradients,
    so the global batch and the schedule are those of one process; only rank 0 logs.
    """
    pool = RealPool(data, base_names_of(part, classes), classes, device)
    seed_everything(seed)  # the same initial weights in every arm (and on every rank; DDP broadcasts rank 0's)
    model = task.build_model(settings, data, classes).to(device)
    model = prepare_model(model, ctx, find_unused_parameters=task.find_unused_parameters)
    hard = steering is not None and steering.settings.mode == "hard"
    batches = OnlineBatches(
        pool, generator, batch_size=ctx.local_batch(settings.batch_size), synthetic_ratio=settings.synthetic_ratio,
        seed=seed + ctx.seed_offset(), device=device, augment_real=settings.augment_real or arm == "classic",
        real_sampling=settings.real_sampling, source=arm, steering=steering,
        scorer=candidate_scorer(task, model, settings) if hard else None)
    steps = settings.steps
    own = task.make_optimizer(model, steps, settings) if hasattr(task, "make_optimizer") else None
    optimizer, scheduler = own or make_optimizer(model, steps, task.learning_rate(settings), settings.weight_decay,
                                                 min(settings.warmup_steps, steps // 5))
    writer = open_writer(log_dir) if ctx.is_main else None

    def on_batch(step: int, batch) -> None:
        if steering is not None and step % settings.log_every == 0:
            steering.log(writer, step)
        if writer is None or (step % settings.grid_every and step != steps - 1):
            return
        real, syn = ~batch.synthetic, batch.synthetic
        if real.any():
            writer.add_image("fed/real", sample_grid(batch.images[real], batch.masks[real]), step)
        if syn.any():
            writer.add_image("fed/synthetic_with_masks", sample_grid(batch.images[syn], batch.masks[syn]), step)

    label = label or f"P{part['partition']} {arm}"
    last = train_fixed_steps(model, batches, steps, task.step_fn(settings, device), optimizer, scheduler, writer,
                             desc=label, log_every=settings.log_every, on_batch=on_batch,
                             progress=getattr(settings, "progress", True) and ctx.is_main,
                             on_losses=batches.observe if steering is not None and hasattr(task, "sample_losses")
                             else None)
    if not math.isfinite(last.get("loss", math.nan)):
        raise RuntimeError(f"{label}: the training loss is {last.get('loss')} at the end")
    return finish_training(model, ctx), batches, writer, last, pool


def write_predictions(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _train_and_evaluate(task: Task, settings: TaskSettings, arm: str, data: CategoryData, part: dict,
                        classes: list[str], tests: TestSet, make_generator: Callable, seed: int, device, out: Path,
                        place: Path, ctx, label: str, trained_on: dict) -> tuple:
    """Train one arm, then on rank 0 evaluate it once on the test set and save the model, predictions.csv and the
    task's own files. Returns (evaluation, run record, real images served) on rank 0, (None, None, served) elsewhere."""
    started = time.time()
    steering = steering_for(task, settings, arm, classes)
    generator = None if arm in REAL_ONLY else make_generator(arm, part["partition"], base_names_of(part, classes),
                                                             steering)
    model, batches, writer, last, pool = train_arm(task, settings, arm, data, part, classes, generator, seed,
                                                   device, out / "tb" / place, ctx, label=label, steering=steering)
    debug_dump(ctx, model, "-".join(place.parts))
    served = gather_union(ctx, set(batches.served_real))
    if not ctx.is_main:
        return None, None, served
    folder = out / place
    try:
        evaluation = task.evaluate(model, tests, settings, device)
        task.log_evaluation(writer, tests, evaluation, settings)
    finally:
        writer.close()
    threshold = task.decision_threshold(model, pool, settings, device)
    if settings.save_models:
        save_model(folder / "model.pt", model, architecture=task.architecture(settings, data, classes),
                   classes=classes, resolution=data.size, channels=data.channels, threshold=threshold,
                   trained_on={**trained_on, "steps": settings.steps, "base": base_names_of(part, classes)})
    write_predictions(task.prediction_rows(tests, evaluation, threshold, settings), folder / "predictions.csv")
    if hasattr(task, "write_outputs"):  # a task's own files beside predictions.csv (detect: COCO JSON)
        task.write_outputs(folder, tests, evaluation, threshold, settings)
    run_record = {
        "epochs": round(batches.epochs * ctx.world_size, 2),
        "synthetic_samples_seen": batches.synthetic_seen * ctx.world_size,
        "final_loss": round(float(last["loss"]), 6),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        **({"steering": steering.record()} if steering is not None else {}),
    }
    return evaluation, run_record, served


def run_partition(task: Task, settings: TaskSettings, data: CategoryData, manifest: dict, partition: int,
                  arms: list[str], make_generator: Callable, seed: int, device, out: Path, ctx,
                  trained_on: dict, held_out_types: list[str] | None = None, finished=None) -> dict:
    """Every arm of one partition: train, evaluate on the test set, save, test against the baseline.

    With `held_out_types` (open set) the arms run once per held-out type, each on the partition without it;
    the entry's arms are then the means over those runs and `held_out` holds each run's own entry.
    """
    part = get_partition(manifest, partition)
    if not held_out_types:
        return _run_arms(task, settings, data, part, arms, make_generator, seed, device, out, ctx, trained_on,
                         finished=finished)
    held = {t: _run_arms(task, settings, data, part, arms, make_generator, seed, device, out, ctx, trained_on,
                         held_out=t, finished=finished) for t in held_out_types}
    return partition_entry(partition, held, arms, task.open_set_metrics)


def _run_arms(task: Task, settings: TaskSettings, data: CategoryData, part: dict, arms: list[str],
              make_generator: Callable, seed: int, device, out: Path, ctx, trained_on: dict,
              held_out: str | None = None, finished=None) -> dict:
    """The arms on one partition; with `held_out`, on the partition without that type (whose images all join
    the test set as unknown), each arm into its own unknown-<type> folder. `finished` (resume.FinishedArms) keeps
    each arm's evaluation on disk when it finishes and, with --resume, reads finished arms back."""
    partition = part["partition"]
    full, part = part, (known_part(part, held_out) if held_out else part)
    classes = task.class_names(settings, sorted(part["defects"]))
    tests = make_test_set(data, part, classes)
    n_unknown = 0
    if held_out:
        tests = with_unknown(tests, data, full, held_out)
        n_unknown = int(tests.unknown.sum())
    entry: dict[str, Any] = {
        "partition": partition, "arms": {}, "runs": {}, "tests": {}, "pairs": {},
        "real_defects": sum(len(names) for names in base_names_of(part, classes).values()),
        "test_defects": tests.n_defect, "test_good": len(tests.names) - tests.n_defect - n_unknown,
    }
    if held_out:
        entry.update(held_out=held_out, classes=list(classes), test_unknown=n_unknown)
    used: set = set()
    baseline: Evaluation | None = None
    evaluations: dict[str, Evaluation] = {}
    for arm in arms:
        place = arm_folder(Path(), partition, arm, held_out)
        folder = out / place
        label = f"P{partition} {arm}" + (f" (unknown {held_out})" if held_out else "")
        saved = finished.read(folder, arm, partition, held_out, label) if finished else None
        if saved is not None:
            if ctx.is_main:
                print(f"{label}: finished earlier, read back from {folder}")
            evaluation = Evaluation(saved["metrics"], saved["outputs"], saved["unknown_scores"])
            run_record = {**saved["run"], "read_back": True}
            used |= {tuple(item) for item in saved["served_real"]}
        else:
            evaluation, run_record, served = _train_and_evaluate(
                task, settings, arm, data, part, classes, tests, make_generator, seed, device, out, place, ctx, label,
                {**trained_on, "partition": partition, "arm": arm, **({"held_out": held_out} if held_out else {})})
            used |= served
            if evaluation is not None and finished:  # rank 0 evaluated it
                finished.save(folder, arm, partition, held_out, evaluation, run_record, served)
        if not ctx.is_main:  # rank 0 evaluates, saves and tests against the baseline
            ctx.barrier()
            continue
        entry["arms"][arm] = evaluation.metrics
        entry["runs"][arm] = run_record
        evaluations[arm] = evaluation
        if arm == BASELINE:
            baseline = evaluation
        elif baseline is not None:
            entry["tests"][arm] = task.paired_tests(tests, baseline, evaluation, settings, seed)
        ctx.barrier()
    # Steered arms against their plain arm, mixtures against their parts: on the same test images, the
    # reference in the baseline's place.
    for arm in evaluations:
        for reference in references(arm, list(evaluations), REAL_ONLY):
            entry["pairs"].setdefault(arm, {})[reference] = task.paired_tests(
                tests, evaluations[reference], evaluations[arm], settings, seed)
    # The audit trail of the protocol: every real image any arm trained on, as (class, file name).
    entry["real_images_used"] = [list(item) for item in sorted(used)]
    return entry


# ----------------------------------------------------------------------------- the command


def run_command(task: Task, args) -> int:
    """One process, or every rank under `torchrun --nproc_per_node N -m inspect_train <task> ...`."""
    run_task(task, args)
    return 0


def run_task(task: Task, args) -> tuple[Path, dict] | None:
    """Train and evaluate every arm; (the output folder, the results as results.json holds them) on rank 0, None
    on the other ranks."""
    ctx = start_run(args.device)
    try:
        return _run(task, args, ctx)
    finally:
        shutdown(ctx)


def _check_args(args) -> None:
    if args.data and not args.category:
        raise InputError("--data needs --category (a folder under the data root)")
    if args.category and not args.data:
        raise InputError("--category needs --data (without --data the toy dataset is used)")


def _open_set_types(task: Task, args, defect_types: list[str]) -> list[str] | None:
    """The held-out types of an open-set run (--open-set, or --unknown T ... which implies it), else None."""
    named = getattr(args, "unknown", None)
    if not (getattr(args, "open_set", False) or named):
        return None
    if not hasattr(task, "open_set_metrics"):
        raise InputError(f"{task.name} has no open-set evaluation")

    return held_out_types(named, defect_types)


def generator_maker(task: Task, settings: TaskSettings, arms: list[str], data: CategoryData, out: Path, args,
                    manifest_path: str, device, ctx, say) -> Callable:
    """make(arm, partition, base_names) -> that arm's generator for the partition's base set.

    Learned generators are trained when missing and cached under --generators (default OUT/generators), each kind
    in its own folder there; each cache refuses generators trained on another base set. The caches are opened here,
    before any arm trains, so a bad config fails at once.
    """
    folder = Path(args.generators) if args.generators else out / "generators"
    caches: dict = {}
    for kind in dict.fromkeys(g for arm in arms for g in parse_arm(arm, REAL_ONLY).generators):
        for name in get_spec(kind).needed(settings.generator_options(kind)):
            if name not in caches:
                caches[name] = learned.open_cache(
                    name, data, settings.generator_options(name), folder, seed=args.seed, device=device,
                    manifest_path=manifest_path, progress=settings.progress and ctx.is_main, ctx=ctx, say=say)

    def build(name: str, partition: int, base_names: dict[str, list[str]]):
        return learned.build_generator(name, BuildRequest(
            data, base_names, device, settings.generator_options(name), paired_good=task.paired_good(settings),
            checkpoints=lambda kind: caches[kind].checkpoints(partition, base_names),
            data_for=lambda kind: caches[kind].data))

    def make(arm: str, partition: int, base_names: dict[str, list[str]], steering: Steering | None = None):
        names = parse_arm(arm, REAL_ONLY).generators
        if len(names) == 1:
            return build(names[0], partition, base_names)
        return MixtureGenerator({name: build(name, partition, base_names) for name in names},
                                steering.source_counts)

    return make


def _check_resumed_task(task: Task, out: Path) -> None:
    """`segment --resume` on a classify run folder is refused by name, before anything is read or written."""
    try:
        record = yaml.safe_load((out / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return  # no readable record: the finished arms' stamps decide
    run = record.get("run") if isinstance(record, dict) else None
    done = run.get("task") if isinstance(run, dict) else None
    if done and done != task.name:
        raise InputError(f"--resume: {out} holds a {done} run, not a {task.name} run; use another --out")


def _read_inputs(task: Task, settings: TaskSettings, args, data_root: Path, category: str, out: Path, size):
    """Scan and load the data, choose the manifest and build the model once (a bad --encoder or --weights
    fails here); writes nothing. (index, RunManifest, CategoryData, held-out types or None)."""
    index = scan_category(data_root, category)
    classes = task.class_names(settings, index.defect_types)  # a one-class problem fails before any image is read
    held_out = _open_set_types(task, args, index.defect_types)
    manifest = manifest_for_run(index, args.manifest, out, max(3, *args.partitions), args.seed)
    for k in args.partitions:
        get_partition(manifest.manifest, k)
    data = load_category(data_root, category, size=size, index=index)
    task.check_data(settings, data)
    task.build_model(settings, data, classes)
    return index, manifest, data, held_out


def _run(task: Task, args, ctx) -> tuple[Path, dict] | None:
    """Check every input first (settings, output folders, data, manifest, model, generator configs and, with
    --resume, every finished arm), then write: a refused command creates or changes nothing."""
    started = time.time()
    _check_args(args)
    arms = arms_from(args.aug, not args.no_baseline, args.steer)
    check_steering(task, arms)
    preset = args.config or (task.data_preset if args.data else task.toy_preset)
    settings = resolve_settings(task.settings_class, task.name, preset, args)
    settings.progress = not args.quiet and ctx.is_main
    task.check_settings(settings)
    ctx.local_batch(settings.batch_size)  # fail early when the batch does not divide over the processes
    if settings.cpu_threads:
        torch.set_num_threads(int(settings.cpu_threads))
    size = parse_resolution(settings.resolution)
    say = print if ctx.is_main else (lambda *a, **k: None)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = check_output_folder(broadcast_object(ctx, args.out or f"runs/{task.name}-{'-'.join(arms)}-{stamp}"))
    if args.generators:
        check_output_folder(args.generators, "--generators")
    device = ctx.device
    if args.resume:
        _check_resumed_task(task, out)

    with tempfile.TemporaryDirectory(prefix="inspect-train-toy-") as staging:
        toy = None if args.data else out / "toy-data"
        staged = broadcast_object(ctx, toy is not None and not (toy / "toy").is_dir())  # rank 0's view
        data_root = Path(args.data) if args.data else (Path(staging) if staged else toy)
        if staged:
            write_toy_dataset(data_root, seed=0)
        index, manifest, data, held_out = _read_inputs(task, settings, args, data_root, args.category or "toy",
                                                       out, size)
        if args.epochs is not None:
            settings.steps = _steps_for_epochs(task, settings, args.epochs, data,
                                               get_partition(manifest.manifest, args.partitions[0]), held_out)
        category = index.category
        finished = FinishedArms(run_stamp(task.name, settings, args, category_digest(index), category, data.size,
                                          manifest.manifest),
                                args.resume, tuple(getattr(task, "saved_types", ())))
        n_finished = finished.check(out, list(args.partitions), arms, held_out)
        make = generator_maker(task, settings, arms, data, out, args, portable_path(manifest.path, out), device,
                               ctx, say if not staged else (lambda *a, **k: None))

        # Every input is checked: from here on the run writes.
        if ctx.is_main:
            make_folder(out)
            if staged:
                shutil.copytree(data_root / "toy", toy / "toy")
        ctx.barrier()
    if toy is not None:
        data_root = toy
        say(f"no --data: using the toy dataset in {data_root / category}")
    if staged:  # the same files, read again where the run keeps them
        index, manifest, data, held_out = _read_inputs(task, settings, args, data_root, category, out, size)
        make = generator_maker(task, settings, arms, data, out, args, portable_path(manifest.path, out), device,
                               ctx, say)
    if ctx.is_main:
        manifest.keep()
    if n_finished:
        say(f"--resume: {n_finished} finished arm(s) in {out} match this run and are read back")
    manifest_path = manifest.path
    manifest = manifest.manifest
    run = {"task": task.name, "aug": arms, "data": str(data_root), "category": category,
           "partitions": list(args.partitions), "seed": args.seed, "manifest": str(manifest_path),
           "device": str(device), "resolution": list(data.size), "channels": data.channels, "preset": str(preset),
           **({"processes": ctx.world_size} if ctx.enabled else {}),
           **({"open_set": held_out} if held_out else {})}
    if ctx.is_main:
        write_config(settings, out / "config.yaml", run)
    entries = []
    trained_on = {"category": category, "data": Path(data_root).resolve().name,
                  "manifest": portable_path(manifest_path, out), "seed": args.seed}
    for k in args.partitions:
        say(f"P{k}: training {', '.join(arms)} for {settings.steps} steps each"
            + (f", once per held-out type ({', '.join(held_out)})" if held_out else ""))
        entries.append(run_partition(task, settings, data, manifest, k, arms, make, args.seed, device, out, ctx,
                                     trained_on, held_out_types=held_out, finished=finished))
    if not ctx.is_main:
        return None  # rank 0 evaluated and writes the results

    n_synthetic = round(settings.synthetic_ratio * settings.batch_size)
    schedule = {"steps": settings.steps, "batch_size": settings.batch_size, "synthetic_per_batch": n_synthetic,
                "real_per_batch": settings.batch_size - n_synthetic,
                "evaluated": "the last step (fixed schedule, no checkpoint selection)"}
    config = {**dataclasses.asdict(settings), "run": run}
    config.pop("progress", None)
    baseline = BASELINE if BASELINE in arms else None
    metrics = task.open_set_metrics if held_out else task.summary_metrics(settings)
    open_set = None
    if held_out:
        open_set = section(entries, arms, metrics, baseline, held_out)
    record = run_record(
        task=task.name, arms=arms, baseline=baseline, metrics=metrics,
        headline=task.open_set_headline if held_out else task.headline, command=command_line(task.name, args),
        config=config, manifest=manifest_path, schedule=schedule, partitions=entries, started=started)
    if open_set is not None:
        record["open_set"] = open_set
    results = write_results(out, record)
    print_summary(results, out)
    return out, results
