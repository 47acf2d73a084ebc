"""The learned generators of a run, trained when missing and cached, for every learned generator kind alike.

Each kind (a spec with `learned`, see generators.spec) keeps its checkpoints under one folder with an index.json
that records the data and config they were made for and, per partition and defect type, the checkpoint and the
base images it was trained on, so a cached generator is never reused for a partition whose base set differs (that
would leak test images into training).

Under torchrun every rank joins the training (the trainers spread the global batch over ranks and write on rank
0 only), so no rank waits alone past the process group's timeout; rank 0 alone writes the index, and every rank
then loads the same checkpoints.

Several commands may share one folder (`--resume` splits a run's partitions over processes): a file lock lets one
process at a time train a given generator (the others wait, then reuse it), and every index write re-reads the
file under a lock and adds its entry, so no process drops another's. A generator whose training was stopped (a
checkpoint there, not in the index) continues from its last saved step instead of starting over.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from generators.registry import checkpoint_kinds, get_spec, spec_for_kind
from generators.spec import BuildRequest, GeneratorSpec, Plan, TrainJob
from inspect_train.data.category import CategoryData, load_category
from inspect_train.checkpoint import checkpoint_kind, read_checkpoint
from inspect_train.distributed import DistContext
from inspect_train.errors import InputError, ResumeRefused
from inspect_train.protocol import read_json, write_json_atomic

INDEX = "index.json"


class GeneratorCache:
    """One learned generator kind's checkpoints under `folder`: p<k>/<defect>/<checkpoint file>, index.json, and
    whatever the kind shares between defect types (a DFMGAN backbone), each trained here when missing."""

    def __init__(self, spec: GeneratorSpec, plan: Plan, folder: Path, data: CategoryData, *, seed: int = 0,
                 device="cpu", progress: bool = True, manifest_path: str | None = None,
                 say: Callable[[str], None] = print, ctx: DistContext | None = None):
        self.spec, self.plan = spec, plan
        self.ctx = ctx or DistContext()
        self.folder = Path(folder)
        self.config, self.data = plan.config, data
        self.seed, self.device, self.progress = seed, str(device), progress
        self.manifest_path = manifest_path
        self.say = say if self.ctx.is_main else (lambda message: None)
        self.trained_on: dict[tuple[int, str], list[str]] = {}  # what this run handed to training (audit)
        self.index = self._read_index()
        self.ctx.barrier()  # every rank has read the same index before rank 0 may rewrite it

    def _identity(self) -> dict:
        return {"generator": self.spec.name, "category": self.data.index.category, "config": self.config.get("name"),
                "resolution": self.plan.index_resolution, "channels": self.data.channels}

    def _read_index(self) -> dict:
        path = self.folder / INDEX
        identity = self._identity()
        if not path.exists():
            return {**identity, "defects": {}}
        index = read_json(path, "generator index")
        index.setdefault("generator", self.spec.name)  # an index without the key is taken as this kind's
        for key, value in identity.items():
            if index.get(key) != value:
                raise InputError(f"{path}: generators were trained for {key} = {index.get(key)!r}, this run needs "
                                 f"{value!r}; use another --generators folder")
        return index

    def update_index(self, update: Callable[[dict], None]) -> None:
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

    def dist(self) -> dict:
        """The process group for a trainer, only when there is one (one process: the plain call)."""
        return {"dist_ctx": self.ctx} if self.ctx.enabled else {}

    def _cached(self, partition: int, defect: str, names: list[str]) -> Path | None:
        """The checkpoint of this partition's `defect` if one was trained on exactly these base images; an
        entry for another base set is refused (reusing it would show test images to training). An entry recorded
        with other `plan.trained_with` values (a painter's steps and loss) is refused by name too, since the run's
        config.yaml would record a generator it did not use."""
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
        wanted = self.plan.trained_with
        differs = {k: entry.get(k) for k, v in wanted.items() if entry.get(k) not in (None, v)}
        if differs:
            raise InputError(
                f"{self.folder / INDEX}: the P{partition} '{defect}' generator was trained with "
                + ", ".join(f"{k} {v}" for k, v in differs.items()) + "; this run asks for "
                + ", ".join(f"{k} {wanted[k]}" for k in differs) + ". Use another --generators folder")
        return path

    def once(self, name: str, lookup: Callable[[], Path | None], train: Callable[[], Path]) -> tuple[Path, bool]:
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

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.folder))

    def checkpoints(self, partition: int, base_names: dict[str, list[str]]) -> dict[str, Path]:
        """One checkpoint per defect type of this partition, trained here when missing."""
        learned = self.spec.learned
        result = {}
        for defect, names in sorted(base_names.items()):
            item = f"{learned.title}: {learned.item(partition, defect)}"

            def train_and_record(defect=defect, names=names, item=item) -> Path:
                out = self.folder / f"p{partition}" / defect
                checkpoint = out / learned.checkpoint_file(defect)
                stopped = checkpoint.exists()
                if stopped:  # killed or out of time before it was recorded: continue it, as --resume does
                    self.say(f"{item}: continuing the stopped run's checkpoint {checkpoint} from its last saved step")
                else:
                    self.say(f"{learned.title}: training {learned.item(partition, defect)} on its {len(names)} base "
                             f"image(s) -> {out}")
                self.trained_on[(partition, defect)] = list(names)
                job = TrainJob(self, partition, defect, list(names), out, stopped,
                               {"partition": partition, "base": list(names), "manifest": self.manifest_path,
                                "category": self.data.index.category})
                try:
                    path = Path(learned.train(job))
                except ResumeRefused as refused:  # a file left in this folder, not a --resume the user asked for
                    raise InputError(f"{refused.reason} (a stopped run left in {self.folder}: use another "
                                     f"--generators folder, or delete {checkpoint} to train it afresh)") from None
                entry = {"checkpoint": self.relative(path), "base": sorted(names), **self.plan.trained_with}
                self.update_index(lambda index: index["defects"].setdefault(f"p{partition}", {})
                                  .__setitem__(defect, entry))
                return path

            path, trained = self.once(f"p{partition}-{defect}",
                                      lambda defect=defect, names=names: self._cached(partition, defect, names),
                                      train_and_record)
            if not trained:
                self.say(f"{learned.title}: reusing {learned.item(partition, defect)} from {path}")
            result[defect] = path
        return result


def at_size(data: CategoryData, size: tuple[int, int]) -> CategoryData:
    """The category at `size` (H, W), where a generator trains (loaded again only when the task's size differs)."""
    size = (int(size[0]), int(size[1]))
    if tuple(data.size) == size:
        return data
    return load_category(data.index.root, data.index.category, size=size, index=data.index)


def open_cache(name: str, data: CategoryData, options: dict, folder: Path, *, seed: int, device, manifest_path,
               progress: bool = True, ctx=None, say: Callable[[str], None] = print) -> GeneratorCache:
    """The cache of learned generator `name` for one classify/segment/detect run, under its own folder of
    `folder` (the run's --generators). `options` are the run's settings for it (preset + flags); the kind's plan
    resolves its config for the task's size, and the category is loaded again at the size it trains at."""
    spec = get_spec(name)
    plan = spec.learned.plan(data, dict(options or {}), str(device))
    where = folder / spec.learned.folder if spec.learned.folder else folder
    height, width = plan.size
    say(f"{spec.learned.noun} ({plan.config.get('name')}, {height}x{width}) cached under "
        f"{where}; missing ones are trained now")
    if plan.note:
        say(plan.note)
    return GeneratorCache(spec, plan, where, at_size(data, plan.size), seed=seed, device=str(device),
                          progress=progress, manifest_path=str(manifest_path), ctx=ctx, say=say)


def read_learned_checkpoint(path: Path | str) -> tuple[GeneratorSpec, dict]:
    """(the learned generator that wrote the file, its contents), read safely; a file of another kind, or one of
    ours missing what its kind's checkpoints hold, is one line naming what it is and what is accepted."""
    state = read_checkpoint(path)
    kind = checkpoint_kind(state)
    spec = spec_for_kind(kind)
    if spec is None:
        raise InputError(f"{path}: {f'a {kind!r} file' if kind else 'a file of no known kind'}, not a learned "
                         f"generator's checkpoint (accepted: {checkpoint_kinds()})")
    missing = [key for key in spec.learned.keys if key not in state]
    if missing:
        raise InputError(f"{path}: an incomplete {kind} checkpoint (no {', '.join(missing)})")
    return spec, state


@contextlib.contextmanager
def loading(paths, kind: str):
    """Build a generator from checkpoints the user gave: weights that do not fit the networks their own config
    describes (a foreign or hand-edited file) are one line, not a traceback."""
    try:
        yield
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as err:
        names = ", ".join(str(p) for p in paths)
        why = f"no {err.args[0]!r}" if isinstance(err, KeyError) and err.args else str(err).splitlines()[0][:200]
        raise InputError(f"{names}: cannot be loaded as {kind} checkpoint(s) ({why})") from None


def build_generator(name: str, request: BuildRequest):
    """Generator `name` for one partition's base set (the one place a run builds its generators)."""
    return get_spec(name).build(request)
