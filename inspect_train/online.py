"""The online mixing dataset: every training step, real base-set images plus FRESH synthetic ones.

Synthetic ratio R = the fraction of each batch that is synthetic:
round(R * batch_size) samples come fresh from the generator (never reused),
the rest are real images of the partition's base set (and train/good with
`with_good`). R = 0.5 is DESIGN's "half of each batch". Synthetic samples are
split evenly over the defect types (the remainder rotates from step to step),
drawn on the training device from a torch.Generator seeded from the run seed,
so no CPU worker touches GPU generation and a seed repeats a run.

Real images are drawn class-balanced by default (each class in turn, each
class's images in a reshuffled cycle), so a 3-image defect type is not drowned
by a 40-image one or by train/good; `real_sampling="uniform"` cycles through
all real images instead. They get classic augmentation only when asked.

With a `Steering` (inspect_train.steering) the model steers the draw: the types' shares follow their running
training losses (fed back through `observe`), a mixture's generators are chosen per type, and with a `scorer`
each kept synthetic sample is the hardest of several candidates. Without one, the draw is the even split above.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from generators.classic.augment import classic_augment
from inspect_train.data.category import CategoryData
from inspect_train.errors import InputError
from inspect_train.steering import Steering

GOOD = "good"
REAL_SAMPLING = ("balanced", "uniform")


@dataclass
class Batch:
    images: torch.Tensor  # float (B, C, H, W) in [0, 1], on the training device
    labels: torch.Tensor  # long (B,), index into class_names
    masks: torch.Tensor  # float (B, 1, H, W): defect pixels (zeros for good images)
    synthetic: torch.Tensor  # bool (B,)
    real_names: list[tuple[str, str]] = field(default_factory=list)  # (class, name) of each real image, see RealPool
    synthetic_goods: torch.Tensor | None = None  # paired defect-free images of the synthetic rows (DRAEM targets)
    sources: list[str | None] = field(default_factory=list)  # the generator of each row (None: a real image)


class RealPool:
    """The real images a partition may train on: its base set per defect type, plus train/good if asked."""

    def __init__(self, data: CategoryData, base_names: dict[str, list[str]], class_names: list[str], device):
        self.class_names = list(class_names)
        images, masks, labels, names = [], [], [], []
        for index, cls in enumerate(self.class_names):
            if cls == GOOD:
                subset = data.train_good
                subset_masks = torch.zeros((len(subset), 1, *subset.images.shape[2:]), dtype=torch.bool)
            else:
                if cls not in base_names:
                    raise InputError(f"class '{cls}' has no base set in this partition")
                subset = data.defects[cls].select(base_names[cls])
                subset_masks = subset.masks
            images.append(subset.images)
            masks.append(subset_masks)
            labels += [index] * len(subset)
            # Defects by file name (as the manifest names them); goods by their folder, so that a
            # train/good/000.png is never mistaken for test/good/000.png.
            names += [(cls, f"train/good/{n}" if cls == GOOD else n) for n in subset.names]
        self.images = torch.cat(images).to(device)  # uint8, converted per batch
        self.masks = torch.cat(masks).to(device)
        self.labels = torch.tensor(labels, dtype=torch.long, device=device)
        self.names = names
        self.by_class = [[i for i, lab in enumerate(labels) if lab == k] for k in range(len(self.class_names))]

    def __len__(self) -> int:
        return len(self.names)


class _Cycle:
    """Endless reshuffled passes over a list of indices."""

    def __init__(self, items: list[int], rng: torch.Generator):
        self.items, self.rng, self.queue = items, rng, []

    def next(self) -> int:
        if not self.queue:
            order = torch.randperm(len(self.items), generator=self.rng).tolist()
            self.queue = [self.items[i] for i in order]
        return self.queue.pop()


class OnlineBatches:
    """An endless iterator of mixed batches; counts what it served (for reports and tests)."""

    def __init__(
        self,
        pool: RealPool,
        generator=None,
        *,
        batch_size: int,
        synthetic_ratio: float = 0.5,
        seed: int = 0,
        device: str | torch.device = "cpu",
        augment_real: bool = False,
        real_sampling: str = "balanced",
        source: str | None = None,
        steering: Steering | None = None,
        scorer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        """`source`: the arm's generator name, recorded per synthetic row (a mixture names its own rows);
        `scorer(images, masks, labels)`: the current model's per-sample loss, for hard-sample selection."""
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1 (got {batch_size})")
        if not 0.0 <= synthetic_ratio <= 1.0:
            raise InputError(f"--synthetic-ratio must be between 0 and 1 (got {synthetic_ratio})")
        if real_sampling not in REAL_SAMPLING:
            raise InputError(f"real_sampling '{real_sampling}' is not one of {REAL_SAMPLING}")
        self.pool, self.generator = pool, generator
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.n_synthetic = round(synthetic_ratio * batch_size) if generator is not None else 0
        self.n_real = batch_size - self.n_synthetic
        self.synthetic_types = []
        if generator is not None:
            self.synthetic_types = [t for t in pool.class_names if t in generator.defect_types]
            if not self.synthetic_types:
                raise InputError(f"the generator makes none of the classes {pool.class_names}")
        self.augment_real = augment_real
        self.source, self.steering, self.scorer = source, steering, scorer
        index_rng = torch.Generator().manual_seed(seed)
        if real_sampling == "balanced":
            self.cycles = [_Cycle(items, index_rng) for items in pool.by_class if items]
        else:
            self.cycles = [_Cycle(list(range(len(pool))), index_rng)]
        self.synthetic_rng = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.augment_rng = torch.Generator(device=self.device).manual_seed(seed + 2)
        self.step = 0
        self.served_real: Counter = Counter()
        self.real_seen = 0
        self.synthetic_seen = 0
        self.synthetic_per_class: Counter = Counter()

    def __iter__(self):
        return self

    def _real(self):
        picks = [self.cycles[(self.real_seen + i) % len(self.cycles)].next() for i in range(self.n_real)]
        idx = torch.tensor(picks, dtype=torch.long, device=self.pool.images.device)
        images = self.pool.images[idx].to(self.device).float().div_(255.0)
        masks = self.pool.masks[idx].to(self.device).float()
        if self.augment_real and len(picks):
            images, masks = classic_augment(images, masks, self.augment_rng)
        names = [self.pool.names[i] for i in picks]
        self.served_real.update(names)
        self.real_seen += len(picks)
        return images, masks, self.pool.labels[idx].to(self.device), names

    def _synthetic_counts(self) -> list[int]:
        types = len(self.synthetic_types)
        counts = [self.n_synthetic // types] * types
        extra = self.n_synthetic % types
        for j in range(extra):
            counts[(self.step * extra + j) % types] += 1
        if self.steering is not None:
            return self.steering.type_counts(self.n_synthetic, counts)
        return counts

    def _draw(self, count: int, defect_type: str, like: torch.Tensor):
        """`count` synthetic samples of one type at the training size, each the hardest of the steering's
        candidates when a scorer is set (kept in the order drawn, so one candidate is the plain draw)."""
        k = self.steering.settings.candidates if self.scorer is not None else 1
        with torch.no_grad():
            sample = self.generator.sample(count * k, defect_type, self.synthetic_rng)
        images, masks = self._fit(sample.images.to(self.device), sample.masks.to(self.device), like)
        goods = None
        if sample.goods is not None:
            goods = self._fit(sample.goods.to(self.device), sample.masks.to(self.device), like)[0]
        sources = sample.sources or [self.source] * (count * k)
        if self.scorer is not None:
            label = self.pool.class_names.index(defect_type)
            labels = torch.full((count * k,), label, dtype=torch.long, device=self.device)
            hardness = self.scorer(images.float(), masks.float(), labels)
            keep = torch.sort(torch.argsort(hardness, descending=True, stable=True)[:count]).values
            images, masks = images[keep], masks[keep]
            goods = None if goods is None else goods[keep]
            sources = [sources[i] for i in keep.tolist()]
        return images, masks, goods, sources

    def observe(self, batch: "Batch", losses: torch.Tensor) -> None:
        """The per-row training losses of a batch this dataset served (steering only)."""
        if self.steering is None:
            return
        names = self.pool.class_names
        types = [None if names[i] == GOOD else names[i] for i in batch.labels.tolist()]
        self.steering.observe(types, batch.sources, losses)

    def _fit(self, images: torch.Tensor, masks: torch.Tensor, like: torch.Tensor):
        """Bring generator output to the training resolution and channel count."""
        if images.shape[-2:] != like.shape[-2:]:
            images = F.interpolate(images, size=like.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
            masks = F.interpolate(masks, size=like.shape[-2:], mode="nearest")
        if images.shape[1] != like.shape[1]:
            images = images.mean(1, keepdim=True) if like.shape[1] == 1 else images.expand(-1, like.shape[1], -1, -1)
        return images.clamp(0, 1), masks

    def __next__(self) -> Batch:
        images, masks, labels, names = self._real()
        parts_i, parts_m, parts_l = [images], [masks], [labels]
        parts_g, all_goods, sources = [], True, [None] * len(names)
        if self.n_synthetic:
            like = self.pool.images[:1]
            for defect_type, count in zip(self.synthetic_types, self._synthetic_counts()):
                if count == 0:
                    continue
                syn_images, syn_masks, syn_goods, syn_sources = self._draw(count, defect_type, like)
                if syn_goods is None:
                    all_goods = False
                elif all_goods:
                    parts_g.append(syn_goods.float())
                sources += syn_sources
                parts_i.append(syn_images.float())
                parts_m.append(syn_masks.float())
                label = self.pool.class_names.index(defect_type)
                parts_l.append(torch.full((count,), label, dtype=torch.long, device=self.device))
                self.synthetic_per_class[defect_type] += count
            self.synthetic_seen += self.n_synthetic
        synthetic = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        synthetic[self.n_real:] = True
        self.step += 1
        goods = torch.cat(parts_g) if parts_g and all_goods else None
        return Batch(torch.cat(parts_i), torch.cat(parts_l), torch.cat(parts_m), synthetic, names, goods, sources)

    @property
    def epochs(self) -> float:
        """Real images served divided by the real pool size."""
        return self.real_seen / max(1, len(self.pool))
