"""Training-loop pieces every downstream task shares: device, seeding, the fixed schedule, TensorBoard.

The schedule is a fixed number of optimiser steps, identical for the baseline
and the augmented arm, with no look at test data on the way: the protocol
forbids choosing a checkpoint on the test set.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw
from torch import nn
from torchvision.utils import make_grid
from tqdm import tqdm

from inspect_train.distributed import DistContext, init_distributed
from inspect_train.errors import InputError


def choose_device(name: str | None = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu; an explicit name is checked."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device '{name}' is not a device name (cpu, cuda, cuda:1, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Same seed + config -> same numbers on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def make_optimizer(model: nn.Module, steps: int, lr: float, weight_decay: float, warmup_steps: int = 0):
    """AdamW with a linear warm-up then cosine decay to zero over exactly `steps`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_fixed_steps(
    model: nn.Module,
    batches: Iterator,
    steps: int,
    step_fn: Callable[[nn.Module, object], tuple[torch.Tensor, dict]],
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    writer=None,
    desc: str = "train",
    log_every: int = 10,
    on_batch: Callable[[int, object], None] | None = None,
    progress: bool = True,
    on_losses: Callable[[object, torch.Tensor], None] | None = None,
) -> dict:
    """Run `steps` optimiser steps; step_fn(model, batch) -> (loss, {scalar name: value}), or with a third item,
    the loss of each row of the batch (B,), None, or a callable giving it (for a loss that costs a pass of its own),
    which goes to on_losses(batch, losses) (the steering reads it).

    Scalars are averaged over `log_every` steps into TensorBoard under train/;
    on_batch(step, batch) can log what was fed (e.g. sample grids). Returns the
    last logged averages.
    """
    if steps < 1:
        raise InputError(f"--steps must be at least 1 (got {steps})")
    model.train()
    running: dict[str, float] = {}
    last: dict[str, float] = {}
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        batch = next(batches)
        if on_batch is not None:
            on_batch(step, batch)
        loss, scalars, *per_row = step_fn(model, batch)
        if on_losses is not None:
            if not per_row:
                raise InputError("steering needs the loss of each training row, and this task's step gives none")
            rows = per_row[0]() if callable(per_row[0]) else per_row[0]  # a callable: computed only when read
            if rows is not None:  # None: this step has no per-row loss to give (DeSTSeg's student stage)
                on_losses(batch, rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        # summed on the loss's device (float64) and read once per log step: no host sync every step on a GPU
        scalars = {"loss": loss, **scalars}
        for key, value in scalars.items():
            value = torch.as_tensor(value).detach().to(loss.device, torch.float64)
            running[key] = running[key] + value if key in running else value
        count = (step % log_every) + 1
        if count == log_every or step == steps - 1:
            last = {k: float(v) / count for k, v in running.items()}
            if writer is not None:
                for key, value in last.items():
                    writer.add_scalar(f"train/{key}", value, step + 1)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step + 1)
            bar.set_postfix(loss=f"{last['loss']:.3f}")
            running = {}
    return last


def sample_grid(images: torch.Tensor, masks: torch.Tensor | None = None, max_n: int = 16) -> torch.Tensor:
    """A (3, H, W) grid: a row of images, and under it their masks (red overlay) when given."""
    images = images[:max_n].detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    rows = [images]
    if masks is not None:
        mask = masks[:max_n].detach().float().cpu()
        overlay = images.clone()
        overlay[:, 0:1] = torch.maximum(overlay[:, 0:1], mask)
        overlay[:, 1:3] = overlay[:, 1:3] * (1 - 0.6 * mask)
        rows = [images, overlay]
    n = images.shape[0]
    return make_grid(torch.cat(rows), nrow=n, padding=2, pad_value=1.0)


def confusion_image(matrix, class_names: list[str], cell: int = 48) -> torch.Tensor:
    """A (3, H, W) uint8 picture of a confusion matrix (rows: true, columns: predicted), counts written in."""
    matrix = np.asarray(matrix, dtype=np.float64)
    k = matrix.shape[0]
    label_w = 8 * max(len(n) for n in class_names) + 32
    img = Image.new("RGB", (label_w + k * cell, label_w // 2 + k * cell), "white")
    draw = ImageDraw.Draw(img)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    top = label_w // 2
    draw.text((2, 2), "true \\ pred", fill="grey")
    for j, name in enumerate(class_names):
        draw.text((label_w + j * cell + cell // 2 - 4, top - 14), str(j), fill="black")  # column = predicted class j
    for i, name in enumerate(class_names):
        draw.text((2, top + i * cell + cell // 2 - 6), f"{i} {name}", fill="black")
        for j in range(k):
            shade = int(255 * (1 - share[i, j]))
            box = (label_w + j * cell, top + i * cell, label_w + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + 4, box[1] + cell // 2 - 6), str(int(matrix[i, j])), fill="black" if shade > 110 else "white")
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------- several processes (torchrun)


def start_run(device_name: str | None = "auto"):
    """The run's DistContext: one process unless torchrun set WORLD_SIZE > 1 (then join its process group).

    One process keeps `choose_device`'s device exactly; under torchrun each rank takes its own GPU (or the CPU).
    """
    device = choose_device(device_name)  # validates the name the same way in both cases
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistContext(device=device)
    return init_distributed(str(device))


def broadcast_object(ctx, value):
    """Rank 0's value on every rank (e.g. a timestamped output folder)."""
    if not ctx.enabled:
        return value

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_union(ctx, items: set) -> set:
    """The union of every rank's set (e.g. the real images each rank trained on, for the audit trail)."""
    if not ctx.enabled:
        return set(items)

    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, set(items))
    return set().union(*gathered)


def main_first(ctx, write: Callable[[], object], read: Callable[[], object]):
    """Rank 0 runs write() (it makes files); the other ranks run read() once rank 0 is done."""
    if ctx.is_main:
        result = write()
        ctx.barrier()
        return result
    ctx.barrier()
    return read()


def prepare_model(model: nn.Module, ctx, find_unused_parameters: bool = False) -> nn.Module:
    """DDP-wrap for several processes; BatchNorm is synchronised across GPUs only.

    SyncBatchNorm refuses CPU modules ("SyncBatchNorm layers only work with GPU modules", torch 2.14, gloo), so on
    the CPU each rank normalises over its own share of the batch and DDP broadcasts rank 0's running statistics.
    `find_unused_parameters` for models holding weights that no forward uses (an smp encoder cut to fewer stages).
    """
    if not ctx.enabled:
        return model
    if ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not find_unused_parameters:
        return ctx.wrap(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (for evaluation and saving)."""
    return getattr(model, "module", model)


def finish_training(model: nn.Module, ctx) -> nn.Module:
    """The plain model, identical on every rank: float buffers (BatchNorm running statistics) averaged over ranks.

    DDP averages gradients, so the weights already agree; the buffers do not, because each rank's last forward
    updates its running statistics from its own share of the batch after DDP's broadcast of rank 0's.
    """
    model = unwrap(model)
    if ctx.enabled:
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.copy_(ctx.mean(buffer))
    return model


DUMP_ENV = "INSPECT_TRAIN_DEBUG_DUMP"  # a folder: every rank saves its trained weights there (for the DDP tests)


def debug_dump(ctx, model: nn.Module, name: str) -> None:
    """With $INSPECT_TRAIN_DEBUG_DUMP set, save this rank's weights as <name>-rank<r>.pt, to compare ranks."""
    folder = os.environ.get(DUMP_ENV)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    torch.save(unwrap(model).state_dict(), Path(folder) / f"{name}-rank{ctx.rank}.pt")
