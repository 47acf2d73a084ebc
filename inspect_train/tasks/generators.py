"""The generator behind each `--aug` choice, for any downstream task.

Classic generators are built per partition from its base set. DFMGAN
generators are trained when missing (stage 1 once per category, stage 2 per
defect type and partition) and cached under one folder with an index.json
that records which base images each was trained on, so a cached generator is
never reused for a partition whose base set differs (that would leak test
images into training). Inpaint painters (one per defect type and partition, trained
on that partition's base images and train/good) are cached the same way, in
their own folder with their own index (`GeneratorCache` holds what both share).

Under torchrun every rank joins the GAN training (the DFMGAN trainers spread
the global batch over ranks and write on rank 0 only), so no rank waits alone
past the process group's timeout; rank 0 alone writes the index, and every
rank then loads the same checkpoints.

Several commands may share one folder (`--resume` splits a run's partitions over processes): a file lock lets one
process at a time train a given generator (the others wait, then reuse it), and every index write re-reads the
file under a lock and adds its entry, so no process drops another's. A generator whose training was stopped (a
checkpoint there, not in the index) continues from its last saved step instead of starting over.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock, Timeout

from generators.registry import create_generator
from inspect_train.data.category import CategoryData
from inspect_train.errors import InputError, ResumeRefused
from inspect_train.protocol import read_json, write_json_atomic

INDEX = "index.json"


class GeneratorCache:
    """What every cache of generators trained when missing shares: one folder, an index.json that names the
    data and config they were made for, and per partition and defect type the checkpoint and the base images
    it was trained on, so a generator is never reused for another base set."""

    def __init__(self, folder: Path, config: dict, gan_data: CategoryData, *, seed: int = 0, device="cpu",
                 progress: bool = True, manifest_path: str | None = None, say: Callable[[str], None] = print,
                 ctx=None):
        from inspect_train.distributed import DistContext

        self.ctx = ctx or DistContext()
        self.folder = Path(folder)
        self.config, self.data = config, gan_data
        self.seed, self.device, self.progress = seed, str(device), progress
        self.manifest_path = manifest_path
        self.say = say if self.ctx.is_main else (lambda message: None)
        self.index = self._read_index()
        self.ctx.barrier()  # every rank has read the same index before rank 0 may rewrite it

    def _identity(self) -> dict:
        return {"category": self.data.index.category, "config": self.config.get("name"),
                "resolution": self._resolution(), "channels": self.data.channels}

    def _resolution(self) -> int | str:
        """The generators' resolution as the index records it: the side of a square painter."""
        return int(self.config["resolution"])

    def _empty_index(self) -> dict:
        return {**self._identity(), "defects": {}}

    def _read_index(self) -> dict:
        path = self.folder / INDEX
        identity = self._identity()
        if not path.exists():
            return self._empty_index()
        index = read_json(path, "generator index")
        for key, value in identity.items():
            if index.get(key) != value:
                raise InputError(f"{path}: generators were trained for {key} = {index.get(key)!r}, this run needs "
                                 f"{value!r}; use another --generators folder")
        return index

    def _save(self, update: Callable[[dict], None]) -> None:
        """Apply `update` to the index on disk (re-read under a lock, so entries another process added since this
        one read it stay) and keep the result; rank 0 alone writes under torchrun."""
        if not self.ctx.is_main:
            update(self.index)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder / f".{INDEX}.lock")):
            self.index = self._read_index()
            update(self.index)
            write_json_atomic(self.index, self.folder / INDEX)

    @contextlib.contextmanager
    def _training(self, name: str):
        """Hold the lock for training `name` in this folder: another process training it first is waited for
        (then the caller finds its entry on re-reading the index). Under torchrun the ranks of one run train
        together and take no file lock (a rank waiting on it would stall the others' collectives)."""
        if self.ctx.enabled:
            yield
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / f".{name}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            self.say(f"waiting: another process is training {name} in {self.folder}")
            lock.acquire()
        try:
            self.index = self._read_index()  # what that process (or any other) recorded meanwhile
            yield
        finally:
            lock.release()

    def _dist(self) -> dict:
        """Pass the process group to the trainers only when there is one (one process: the plain call)."""
        return {"dist_ctx": self.ctx} if self.ctx.enabled else {}

    def _cached(self, partition: int, defect: str, names: list[str],
                trained_with: dict | None = None) -> Path | None:
        """The checkpoint of this partition's `defect` if one was trained on exactly these base images; an
        entry for another base set is refused (reusing it would show test images to training). `trained_with`
        {key: value} is what this run asks for (a painter's steps and loss): an entry recorded with other values
        is refused by name too, since the run's config.yaml would record a generator it did not use."""
        entry = self.index["defects"].get(f"p{partition}", {}).get(defect)
        if entry is None:
            return None
        if sorted(entry["base"]) != sorted(names):
            raise InputError(
                f"{self.folder / INDEX}: the P{partition} '{defect}' generator was trained on another base "
                "set (another manifest?); reusing it would show test images to training. "
                "Use a fresh --generators folder")
        path = self.folder / entry["checkpoint"]
        if not path.exists():
            return None
        differs = {k: entry.get(k) for k, v in (trained_with or {}).items() if entry.get(k) not in (None, v)}
        if differs:
            raise InputError(
                f"{self.folder / INDEX}: the P{partition} '{defect}' generator was trained with "
                + ", ".join(f"{k} {v}" for k, v in differs.items()) + "; this run asks for "
                + ", ".join(f"{k} {trained_with[k]}" for k in differs) + ". Use another --generators folder")
        return path

    def _once(self, name: str, lookup: Callable[[], Path | None], train: Callable[[], Path]) -> tuple[Path, bool]:
        """(`lookup()`'s checkpoint, False), else (`train()`'s, True). `train` runs holding the folder's lock for
        `name` and records its result in the index before the lock goes, so a second process asking for the same
        generator waits, looks again and reuses it."""
        cached = lookup()
        if cached is None:
            with self._training(name):
                cached = lookup()
                if cached is None:
                    return Path(train()), True
        return cached, False

    def _reuse_or_train(self, partition: int, defect: str, names: list[str], train: Callable[[], Path],
                        reuse_message: str, trained_with: dict | None = None) -> Path:
        """The cached checkpoint of this partition's `defect`, else `train()`'s, recorded in the index."""
        def train_and_record() -> Path:
            path = Path(train())
            self._record(partition, defect, path, names, **(trained_with or {}))
            return path

        path, trained = self._once(f"p{partition}-{defect}",
                                   lambda: self._cached(partition, defect, names, trained_with), train_and_record)
        if not trained:
            self.say(f"{reuse_message} from {path}")
        return path

    def _stopped_run(self, checkpoint: Path, label: str) -> bool:
        """Whether an unrecorded checkpoint is there: a run stopped (killed, out of time) before it finished and was
        recorded. Training continues it from its last saved step, as `--resume` does, rather than starting over;
        the trainer refuses one made from another base set."""
        if not checkpoint.exists():
            return False
        self.say(f"{label}: continuing the stopped run's checkpoint {checkpoint} from its last saved step")
        return True

    @contextlib.contextmanager
    def _stopped_run_refusals(self, checkpoint: Path):
        """A stopped run the trainer refuses to continue is a file left in this folder, not a --resume the user
        asked for: say what to do here instead of the gan commands' remedy."""
        try:
            yield
        except ResumeRefused as refused:
            raise InputError(f"{refused.reason} (a stopped run left in {self.folder}: use another --generators "
                             f"folder, or delete {checkpoint} to train it afresh)") from None

    def _record(self, partition: int, defect: str, path: Path, names: list[str], **more) -> None:
        entry = {"checkpoint": str(Path(path).relative_to(self.folder)), "base": sorted(names), **more}
        self._save(lambda index: index["defects"].setdefault(f"p{partition}", {}).__setitem__(defect, entry))


class DFMGANCache(GeneratorCache):
    """Stage-1/stage-2 checkpoints under `folder`: backbone/, p<k>/<defect>/, index.json."""

    def __init__(self, folder: Path, config: dict, gan_data: CategoryData, *, seed: int = 0, device="cpu",
                 backbone_steps: int | None = None, defect_steps: int | None = None, progress: bool = True,
                 manifest_path: str | None = None, say: Callable[[str], None] = print, ctx=None):
        self.backbone_steps, self.defect_steps = backbone_steps, defect_steps
        super().__init__(folder, config, gan_data, seed=seed, device=device, progress=progress,
                         manifest_path=manifest_path, say=say, ctx=ctx)

    def _empty_index(self) -> dict:
        return {**self._identity(), "backbone": None, "defects": {}}

    def _resolution(self) -> int | str:
        """N for square generators (as every index before rectangles), 'HxW' otherwise: a folder of square
        generators is refused by name for a rectangular run, and the other way round."""
        from generators.dfmgan.config import resolution_hw, resolution_value

        return resolution_value(resolution_hw(self.config))

    def _cached_backbone(self) -> Path | None:
        entry = self.index.get("backbone")
        if entry and (self.folder / entry["checkpoint"]).exists():
            return self.folder / entry["checkpoint"]
        return None

    def backbone(self) -> Path:
        return self._once("backbone", self._cached_backbone, self._train_backbone)[0]

    def _train_backbone(self) -> Path:
        from generators.dfmgan.api import fit_backbone
        from generators.dfmgan.train_backbone import BACKBONE_FILE

        out = self.folder / "backbone"
        if (out / BACKBONE_FILE).exists():  # e.g. from `gan fit-backbone --out FOLDER/backbone`, or a killed run
            self.say(f"DFMGAN stage 1: continuing the backbone checkpoint in {out} to its last step")
        else:
            self.say(f"DFMGAN stage 1: training the backbone on {len(self.data.train_good)} train/good images "
                     f"-> {out}")
        path = fit_backbone(self.data.train_good.images, self.config, out, steps=self.backbone_steps, seed=self.seed,
                            device=self.device, resume=True, progress=self.progress, **self._dist())
        entry = {"checkpoint": str(Path(path).relative_to(self.folder)), "steps": self.backbone_steps}
        self._save(lambda index: index.__setitem__("backbone", entry))
        return Path(path)

    def checkpoints(self, partition: int, base_names: dict[str, list[str]]) -> dict[str, Path]:
        """One stage-2 checkpoint per defect type of this partition, trained here when missing."""
        result = {}
        for defect, names in sorted(base_names.items()):
            def train(defect=defect, names=names) -> Path:
                backbone = self.backbone()
                from generators.dfmgan.api import fit_defect
                from generators.dfmgan.train_defect import defect_file

                subset = self.data.defects[defect].select(names)
                out = self.folder / f"p{partition}" / defect
                checkpoint = out / defect_file(defect)
                stopped = self._stopped_run(checkpoint, f"DFMGAN stage 2: P{partition} '{defect}'")
                if not stopped:
                    self.say(f"DFMGAN stage 2: training P{partition} '{defect}' on its {len(names)} base image(s) "
                             f"-> {out}")
                with self._stopped_run_refusals(checkpoint):
                    return fit_defect(backbone, subset.images, subset.masks, defect, out, config=self.config,
                                      steps=self.defect_steps, seed=self.seed, device=self.device, resume=stopped,
                                      progress=self.progress,
                                      extra={"partition": partition, "base": list(names),
                                             "manifest": self.manifest_path, "category": self.data.index.category},
                                      **self._dist())

            result[defect] = self._reuse_or_train(partition, defect, names, train, f"DFMGAN stage 2: reusing "
                                                  f"P{partition} '{defect}'")
        return result


class InpaintCache(GeneratorCache):
    """One painter per partition and defect type under `folder` (p<k>/<defect>/inpaint_<defect>.pt, index.json),
    each trained on that partition's base images of the type and train/good only."""

    def __init__(self, folder: Path, config: dict, data: CategoryData, *, seed: int = 0, device="cpu",
                 steps: int | None = None, loss: str | None = None, progress: bool = True,
                 manifest_path: str | None = None, say: Callable[[str], None] = print, ctx=None):
        self.steps, self.loss = steps, loss
        self.trained_on: dict[tuple[int, str], list[str]] = {}  # what this run handed to training (audit)
        super().__init__(folder, config, data, seed=seed, device=device, progress=progress,
                         manifest_path=manifest_path, say=say, ctx=ctx)

    def _identity(self) -> dict:
        return {"generator": "inpaint", **super()._identity()}

    def checkpoints(self, partition: int, base_names: dict[str, list[str]]) -> dict[str, Path]:
        """One painter per defect type of this partition, trained here when missing."""
        from generators.inpaint.api import fit_inpaint

        train = self.config["train"]
        wanted = {"loss": self.loss or train.get("loss", "nsgan"),
                  "steps": self.steps if self.steps is not None else int(train["steps"])}
        result = {}
        for defect, names in sorted(base_names.items()):
            def train(defect=defect, names=names) -> Path:
                from generators.inpaint.checkpoint import painter_file

                subset = self.data.defects[defect].select(names)
                out = self.folder / f"p{partition}" / defect
                checkpoint = out / painter_file(defect)
                stopped = self._stopped_run(checkpoint, f"inpaint: the P{partition} '{defect}' painter")
                if not stopped:
                    self.say(f"inpaint: training the P{partition} '{defect}' painter on its {len(names)} base "
                             f"image(s) and {len(self.data.train_good)} train/good -> {out}")
                self.trained_on[(partition, defect)] = list(subset.names)
                with self._stopped_run_refusals(checkpoint):
                    return fit_inpaint(subset.images, subset.masks, self.data.train_good.images, defect, out,
                                       config=self.config, steps=self.steps, loss=wanted["loss"], seed=self.seed,
                                       device=self.device, resume=stopped, progress=self.progress,
                                       extra={"partition": partition, "base": list(names),
                                              "manifest": self.manifest_path, "category": self.data.index.category},
                                       **self._dist())

            result[defect] = self._reuse_or_train(partition, defect, names, train,
                                                  f"inpaint: reusing the P{partition} '{defect}' painter",
                                                  trained_with=wanted)
        return result


def at_size(data: CategoryData, size: tuple[int, int]) -> CategoryData:
    """The category at `size` (H, W), where a generator trains (loaded again only when the task's size differs)."""
    size = (int(size[0]), int(size[1]))
    if tuple(data.size) == size:
        return data
    from inspect_train.data.category import load_category

    return load_category(data.index.root, data.index.category, size=size, index=data.index)


def dfmgan_config_for(config: dict, task_size: tuple[int, int]) -> dict:
    """The DFMGAN config at the task's aspect: the preset's resolution becomes the short side (dfmgan-64 for a
    192x64 task trains at 192x64, dfmgan-tiny for 48x16 at 96x32), so a long part is not squashed into a square
    for the generator and stretched back; a square task keeps a square generator."""
    from generators.dfmgan.config import resolution_hw, size_for_aspect, with_resolution

    size = size_for_aspect(min(resolution_hw(config)), tuple(task_size))
    return config if size == resolution_hw(config) else with_resolution(config, size)


def open_dfmgan_cache(data: CategoryData, preset: dict, folder: Path, *, seed: int, device, manifest_path,
                      progress: bool = True, ctx=None, say: Callable[[str], None] = print) -> DFMGANCache:
    """The DFMGAN generators of one classify/segment run, from the resolved task settings' `gan_config`,
    `gan_backbone_steps`, `gan_defect_steps` (flags already applied; None falls back to dfmgan-256 and the DFMGAN
    config's own step counts). They train at the task's aspect with the GAN config's resolution as the short side
    (`dfmgan_config_for`; the category is loaded again at that size when the task's differs); the online dataset
    resizes their samples to the task's resolution."""
    from generators.dfmgan.api import load_config
    from generators.dfmgan.config import resolution_hw

    name = preset.get("gan_config") or "dfmgan-256"
    config = dfmgan_config_for(load_config(name), tuple(data.size))
    height, width = resolution_hw(config)
    gan_data = at_size(data, (height, width))
    say(f"DFMGAN generators ({config.get('name', name)}, {height}x{width}) cached under {folder}; "
        "missing ones are trained now")
    if torch.device(device).type == "cpu" and min(height, width) >= 128:
        say(f"note: training {config.get('name', name)} on a CPU takes days (stage 1 of dfmgan-256 sees about "
            "0.36 images/s on 2 cores); use a GPU, or --gan-config dfmgan-64 for a CPU-sized run")
    cache = DFMGANCache(
        folder, config, gan_data, seed=seed, device=str(device),
        backbone_steps=preset.get("gan_backbone_steps"), defect_steps=preset.get("gan_defect_steps"),
        progress=progress, manifest_path=str(manifest_path), ctx=ctx, say=say)
    cache.config_name = name  # as asked for (a preset name or a path), for the run's record
    return cache


def open_inpaint_cache(data: CategoryData, folder: Path, *, seed: int, device, manifest_path,
                       config: str | None = None, steps: int | None = None, loss: str | None = None,
                       progress: bool = True, ctx=None, say: Callable[[str], None] = print) -> InpaintCache:
    """The inpaint painters of one classify/segment run, under `folder`. `config` None: inpaint-tiny for a task
    at 32 px or less, inpaint-64 up to 64 px, else inpaint-128; `steps` None: the config's. They train at the
    config's square resolution (the category is loaded again at that size when the task's differs); the online
    dataset resizes their samples to the task's resolution."""
    from generators.inpaint.api import default_config_for, load_config

    if steps is not None and steps < 0:
        raise InputError(f"--inpaint-steps {steps}: must be 0 or more")
    name = config or default_config_for(tuple(data.size))
    loaded = load_config(name)
    side = int(loaded["resolution"])
    inpaint_data = at_size(data, (side, side))  # painters stay square
    say(f"inpaint painters ({loaded.get('name', name)}, {side}x{side}) cached under {folder}; "
        "missing ones are trained now")
    return InpaintCache(folder, loaded, inpaint_data, seed=seed, device=str(device), steps=steps, loss=loss,
                        progress=progress, manifest_path=str(manifest_path), ctx=ctx, say=say)


def generator_factory(aug: str, data: CategoryData, device: torch.device, options: dict | None = None,
                      dfmgan: DFMGANCache | None = None,
                      inpaint: "InpaintCache | None" = None) -> Callable[[int, dict[str, list[str]]], object]:
    """make(partition, base_names) -> the DefectGenerator for that partition's base set."""
    options = dict(options or {})

    def make(partition: int, base_names: dict[str, list[str]]):
        if aug == "dfmgan":
            if dfmgan is None:
                raise InputError("--aug dfmgan needs a DFMGAN generator folder")
            return create_generator("dfmgan", data, base_names, device,
                                   checkpoints=dfmgan.checkpoints(partition, base_names), **options)
        if aug == "inpaint":
            if inpaint is None:
                raise InputError("--aug inpaint needs a painter folder")
            extra = dict(options)
            if extra.get("mask_source") == "dfmgan":
                if dfmgan is None:
                    raise InputError("inpaint mask_source dfmgan needs the DFMGAN generators")
                extra["mask_checkpoints"] = dfmgan.checkpoints(partition, base_names)
            # The painters' own resolution: the category as loaded for them (the online dataset resizes).
            return create_generator("inpaint", inpaint.data, base_names, device,
                                   checkpoints=inpaint.checkpoints(partition, base_names), **extra)
        return create_generator(aug, data, base_names, device, **options)

    return make
